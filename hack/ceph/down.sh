#!/usr/bin/env bash
# hack/ceph/down.sh [--keep-dir] DIR — stop the Ceph daemons that hack/ceph/up.sh started from DIR
# (found through their pid files in DIR/run) and remove DIR. With --keep-dir, only the daemons are
# stopped and up.sh's files removed, DIR itself stays (up.sh uses this to restart a half-built
# cluster in a directory the caller owns).
set -euo pipefail

keep=false
if [[ ${1:-} == --keep-dir ]]; then
	keep=true
	shift
fi
if [[ $# -ne 1 || -z $1 ]]; then
	echo "usage: $0 [--keep-dir] DIR" >&2
	exit 2
fi
DIR=$(realpath -m -- "$1")
[[ -d $DIR ]] || exit 0

# Refuse to remove anything that does not look like up.sh's work.
if [[ ! -f $DIR/ceph.conf && ! -d $DIR/run ]] && [[ -n $(ls -A "$DIR") ]]; then
	echo "down.sh: $DIR does not look like a cluster made by up.sh; not touching it" >&2
	exit 1
fi

# The daemon's pid, if its pid file names a live ceph process.
daemon_pid() {
	local pf=$1 pid
	[[ -s $pf ]] || return 1
	pid=$(<"$pf")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# Only our own daemons: the process must be a ceph-* started with this DIR's config.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- " -c $DIR/ceph.conf " || return 1
	echo "$pid"
}

pids=()
shopt -s nullglob
for pf in "$DIR"/run/*.pid; do
	if pid=$(daemon_pid "$pf"); then
		pids+=("$pid")
		kill -TERM "$pid" 2>/dev/null || true
	fi
done

# Give them 10 s to exit, then SIGKILL the rest.
for _ in $(seq 100); do
	alive=()
	for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
	((${#alive[@]} == 0)) && break
	sleep 0.1
done
for pid in "${alive[@]}"; do
	echo "down.sh: pid $pid did not stop on SIGTERM; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
done
echo "down.sh: stopped ${#pids[@]} daemon(s) of $DIR" >&2

if $keep; then
	rm -rf "$DIR"/{ceph.conf,env,ready,monmap,mkfs.keyring,*.keyring,mon.*,mgr.*,osd.*,run,log}
else
	rm -rf "$DIR"
fi
