#!/usr/bin/env bash
# hack/ceph/up.sh DIR — start a small, real Ceph cluster for Kumo's tests and labs.
#
#   1 mon on 127.0.0.1 (port: $CEPH_MON_PORT or a free one), 1 mgr, 3 bluestore OSDs on sparse
#   file-backed blocks, cephx on. CRUSH: root=default > datacenter dc1..dc3 > host node-dc1..3 >
#   osd.0..2; rule "rep-dc" puts each replica in a different datacenter; pool "kumo" (size 3,
#   min_size 2, rule rep-dc, rbd-initialised); user client.kumo with
#   `mon 'profile rbd' osd 'profile rbd pool=kumo'`.
#
# Everything (config, keyrings, mon store, OSD blocks, pid files, logs, admin sockets) lives in
# DIR; nothing is written to /etc/ceph or /var/lib/ceph. Writes:
#   DIR/ceph.conf               for `ceph -c`, `rbd -c` and QEMU (`rbd:...:conf=DIR/ceph.conf`)
#   DIR/client.admin.keyring    admin key (found by ceph.conf for --id admin, the default)
#   DIR/client.kumo.keyring     the kumo user's key (found by ceph.conf for --id kumo)
#   DIR/env                     shell lines CEPH_CONF= CEPH_KEYRING= CEPH_POOL= CEPH_USER= ...
# and prints DIR/env on stdout (progress and timings go to stderr).
#
# Idempotent: if DIR already holds a running, ready cluster it only prints the env; if DIR holds a
# finished cluster whose daemons are stopped, it restarts them; a half-built DIR is rebuilt.
# Stop and remove with hack/ceph/down.sh DIR.
#
# Env: CEPH_MON_PORT (default: a free port), CEPH_OSD_SIZE (default 3G), CEPH_PG_NUM (default 32),
#      CEPH_UP_TIMEOUT (seconds for each wait, default 120).
#
# Spread over datacenters (the lab, internal/lab): CEPH_DATACENTERS="dc1=IP1@NETNS1 dc2=IP2@NETNS2 ..."
# gives one monitor (mon.dcN, v2:IPn:3300) and one OSD per datacenter (osd.i in datacenter dcN,
# host dcN-ctl, bound to IPn), each started inside its network namespace (`ip netns exec NETNS`),
# and the mgr in the first one. It also shortens failure detection so that I/O to a PG whose
# primary died resumes within seconds (the options and why: "lab failure detection" below).
set -euo pipefail

if [[ $# -ne 1 || -z $1 || $1 == -h || $1 == --help ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi

DIR=$(realpath -m -- "$1")
# Layout: DC_NAMES[i], DC_ADDRS[i], DC_NETNS[i] for datacenter i (lab), or the single-host default.
DC_NAMES=() DC_ADDRS=() DC_NETNS=()
for spec in ${CEPH_DATACENTERS:-}; do
	if [[ ! $spec =~ ^([a-z0-9-]+)=([0-9.]+)@([A-Za-z0-9_.-]+)$ ]]; then
		echo "CEPH_DATACENTERS: entry \"$spec\" is not NAME=IP@NETNS" >&2
		exit 2
	fi
	DC_NAMES+=("${BASH_REMATCH[1]}") DC_ADDRS+=("${BASH_REMATCH[2]}") DC_NETNS+=("${BASH_REMATCH[3]}")
done
NUM_OSDS=3
((${#DC_NAMES[@]} == 0)) || NUM_OSDS=${#DC_NAMES[@]}
OSD_SIZE=${CEPH_OSD_SIZE:-3G}
PG_NUM=${CEPH_PG_NUM:-32}
TIMEOUT=${CEPH_UP_TIMEOUT:-120}
POOL=kumo
USER_NAME=kumo
CONF=$DIR/ceph.conf

T0=$(date +%s%N)
elapsed() { local now; now=$(date +%s%N); printf '%d.%01d' $(((now - T0) / 1000000000)) $(((now - T0) / 100000000 % 10)); }
log() { echo "[ceph-up +$(elapsed)s] $*" >&2; }

# Print the end of every daemon log (and the stray stdout/stderr files), then exit 1.
die() {
	echo "[ceph-up +$(elapsed)s] ERROR: $*" >&2
	local f
	for f in "$DIR"/log/{mon,mgr,osd}.*.log "$DIR"/log/*.out; do
		[[ -s $f ]] || continue
		echo "----- tail $f -----" >&2
		tail -n 12 "$f" | cut -c1-300 >&2
	done
	if compgen -G "$DIR/run/*.pid" >/dev/null; then
		echo "(daemons left running for inspection; clean up with: $(dirname "$0")/down.sh $DIR)" >&2
	fi
	exit 1
}

# ceph/rbd as the admin user of this cluster, never hanging for long.
ceph_() { timeout 30 ceph -c "$CONF" --connect-timeout 15 "$@"; }
rbd_() { timeout 60 rbd -c "$CONF" "$@"; }

# wait_for DESCRIPTION COMMAND...: run COMMAND until it succeeds, at most $TIMEOUT seconds.
wait_for() {
	local what=$1
	shift
	local deadline=$((SECONDS + TIMEOUT))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
		sleep 0.3
	done
	log "$what"
}

# The daemons of this cluster: names with pid files in DIR/run.
MONS=(mon.a)
if ((${#DC_NAMES[@]} > 0)); then
	MONS=()
	for n in "${DC_NAMES[@]}"; do MONS+=("mon.$n"); done
fi
DAEMONS=("${MONS[@]}" mgr.x)
for ((i = 0; i < NUM_OSDS; i++)); do DAEMONS+=("osd.$i"); done

# netns_of NAME: the network namespace a daemon runs in (empty: the caller's).
netns_of() {
	((${#DC_NAMES[@]} > 0)) || return 0
	local name=$1 i
	case $name in
	mon.*) for i in "${!DC_NAMES[@]}"; do [[ mon.${DC_NAMES[i]} == "$name" ]] && echo "${DC_NETNS[i]}"; done ;;
	osd.*) echo "${DC_NETNS[${name#osd.}]}" ;;
	mgr.*) echo "${DC_NETNS[0]}" ;;
	esac
	return 0
}

pid_alive() { # pid_alive NAME: the daemon's pid file names a live ceph process using $CONF
	local pf=$DIR/run/$1.pid pid
	[[ -s $pf ]] || return 1
	pid=$(<"$pf")
	[[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- " -c $CONF "
}

start_daemon() { # start_daemon NAME: start ceph-<type> -i <id>; it daemonizes and writes its pid file
	local name=$1 type=${1%%.*} id=${1#*.} ns launch=()
	ns=$(netns_of "$name")
	[[ -z $ns ]] || launch=(ip netns exec "$ns")
	"${launch[@]}" "ceph-$type" -c "$CONF" -i "$id" </dev/null >>"$DIR/log/$name.out" 2>&1 ||
		{ echo "ceph-$type -i $id failed to start" >&2; return 1; }
}

print_env() { cat "$DIR/env"; }

# ---------------------------------------------------------------------------------------------
# 0. Packages: install only what is missing.
# ---------------------------------------------------------------------------------------------
install_packages() {
	local missing=() p
	for p in ceph-mon ceph-osd ceph-mgr ceph-common qemu-block-extra qemu-utils; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]}"
	[[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"${TMPDIR:-/tmp}/ceph-up-apt.log" 2>&1; then
		# Probably stale or missing package lists: refresh once and retry.
		apt-get update -q >>"${TMPDIR:-/tmp}/ceph-up-apt.log" 2>&1 || true
		apt-get install -y -q --no-install-recommends "${missing[@]}" >>"${TMPDIR:-/tmp}/ceph-up-apt.log" 2>&1 ||
			{ tail -n 20 "${TMPDIR:-/tmp}/ceph-up-apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
	fi
	log "installed ${missing[*]}"
}

# ---------------------------------------------------------------------------------------------
# Readiness: all OSDs up and in, every PG active+clean, health OK (or only harmless warnings).
# ---------------------------------------------------------------------------------------------
# Health checks that do not matter for a throwaway test cluster.
HARMLESS_CHECKS='^(MON_DISK_LOW|MON_DISK_CRIT|MON_CLOCK_SKEW|RECENT_CRASH|RECENT_MGR_MODULE_CRASH|OSDMAP_FLAGS|TELEMETRY_CHANGED|POOL_NO_REDUNDANCY|MGR_MODULE_DEPENDENCY|BLUESTORE_DISK_SIZE_MISMATCH)$'

# Reads `ceph status -f json` on stdin; exits 0 when the cluster is settled, else prints why not.
READY_PY='
import json, re, sys
want, harmless = int(sys.argv[1]), re.compile(sys.argv[2])
s = json.load(sys.stdin)
om = s.get("osdmap", {})
om = om.get("osdmap", om)  # nested in older releases
if om.get("num_up_osds", 0) < want or om.get("num_in_osds", 0) < want:
    sys.exit("osds up/in: %s/%s of %d" % (om.get("num_up_osds"), om.get("num_in_osds"), want))
pg = s.get("pgmap", {})
n = pg.get("num_pgs", 0)
clean = sum(x["count"] for x in pg.get("pgs_by_state", []) if x["state_name"] == "active+clean")
if n == 0 or clean != n:
    sys.exit("pgs active+clean: %d of %d" % (clean, n))
h = s.get("health", {})
bad = [k for k in h.get("checks", {}) if not harmless.match(k)]
if h.get("status") not in ("HEALTH_OK", "HEALTH_WARN") or bad:
    sys.exit("health %s: %s" % (h.get("status"), " ".join(bad)))
'

cluster_ready() { # succeeds when `ceph status` shows a settled cluster; sets READY_WHY otherwise
	local st
	st=$(ceph_ status -f json 2>&1) || { READY_WHY="ceph status failed: $st"; return 1; }
	READY_WHY=$(/usr/bin/python3 -c "$READY_PY" "$NUM_OSDS" "$HARMLESS_CHECKS" <<<"$st" 2>&1)
}

wait_ready() {
	local deadline=$((SECONDS + TIMEOUT))
	READY_WHY=
	until cluster_ready; do
		((SECONDS < deadline)) || die "cluster not ready after ${TIMEOUT}s: $READY_WHY"
		sleep 0.5
	done
	log "cluster ready: $(ceph_ health 2>&1), $(ceph_ pg stat 2>&1 | cut -d';' -f1)"
}

# ---------------------------------------------------------------------------------------------
# Already there?
# ---------------------------------------------------------------------------------------------
install_packages

if [[ -f $DIR/ready ]]; then
	down=()
	for d in "${DAEMONS[@]}"; do pid_alive "$d" || down+=("$d"); done
	if ((${#down[@]} == 0)) && ceph_ health >/dev/null 2>&1; then
		log "cluster in $DIR is already running"
		print_env
		exit 0
	fi
	# A complete cluster whose daemons were stopped (e.g. after a reboot): start them again.
	log "restarting ${down[*]:-nothing (mon unreachable)}"
	for d in "${down[@]}"; do start_daemon "$d" || die "could not restart $d"; done
	wait_for "mon quorum" ceph_ mon stat
	wait_ready
	print_env
	exit 0
fi

if [[ ! -f $CONF && -d $DIR && -n $(ls -A "$DIR") ]]; then
	die "$DIR is neither empty nor a cluster made by $0"
elif [[ -f $CONF ]]; then
	# A half-built cluster from an interrupted run: stop what it started and start over.
	log "$DIR holds an unfinished cluster: removing it"
	"$(dirname "$0")/down.sh" --keep-dir "$DIR" >&2
fi

# ---------------------------------------------------------------------------------------------
# 1. Config and keys.
# ---------------------------------------------------------------------------------------------
mkdir -p "$DIR"/{run,log}

# A free TCP port for the mon (msgr v2 only; the OSDs pick theirs in 6800-7300). In the lab each
# mon has an address of its own and takes the standard port.
port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
if ((${#DC_NAMES[@]} > 0)); then
	CEPH_MON_PORT=${CEPH_MON_PORT:-3300}
elif [[ -z ${CEPH_MON_PORT:-} ]]; then
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 12000))
		if port_free "$p"; then CEPH_MON_PORT=$p; break; fi
	done
	[[ -n ${CEPH_MON_PORT:-} ]] || die "no free port found for the mon"
elif ! port_free "$CEPH_MON_PORT"; then
	die "CEPH_MON_PORT=$CEPH_MON_PORT is already in use"
fi
MON_ADDR="v2:127.0.0.1:$CEPH_MON_PORT"
MON_HOST="[$MON_ADDR]"
PUBLIC_ADDR=127.0.0.1
if ((${#DC_NAMES[@]} > 0)); then
	MON_HOST= PUBLIC_ADDR=
	for a in "${DC_ADDRS[@]}"; do MON_HOST+="${MON_HOST:+,}[v2:$a:$CEPH_MON_PORT]"; done
	MON_ADDR=$MON_HOST
fi
FSID=$(cat /proc/sys/kernel/random/uuid)

cat >"$CONF" <<EOF
# Generated by hack/ceph/up.sh: a throwaway test cluster. Everything lives in $DIR.
[global]
fsid = $FSID
mon host = $MON_HOST
${PUBLIC_ADDR:+public addr = $PUBLIC_ADDR}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
# Each entity's key: $DIR/client.admin.keyring, $DIR/client.kumo.keyring, ...
keyring = $DIR/\$name.keyring
run dir = $DIR/run
ms bind ipv6 = false
osd pool default size = 3
osd pool default min size = 2
osd pool default pg autoscale mode = off
mon allow pool delete = true
# PG states reach the mon (ceph status, health) through the mgr: report every second, not every 5.
mgr stats period = 1
mon mgr digest period = 1
# The test disk is shared with everything else: do not warn about the host's free space.
mon data avail warn = 1
mon data avail crit = 0

[client]
log file = $DIR/log/client.log
admin socket = $DIR/run/\$cluster-\$name.\$pid.\$cctid.asok

[mon]
mon data = $DIR/\$name
keyring = \$mon_data/keyring
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
mon cluster log file = $DIR/log/cluster.log
# Commit map changes quickly (default 1 s): bring-up is a string of small map updates.
paxos propose interval = 0.1

[mgr]
mgr data = $DIR/\$name
keyring = \$mgr_data/keyring
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
# Only the always-on modules (no restful, iostat, nfs, ...); never even load the others.
mgr initial modules =
mgr disabled modules = alerts,diskprediction_local,influx,insights,iostat,localpool,mirroring,nfs,osd_perf_query,osd_support,prometheus,restful,selftest,snap_schedule,stats,telegraf,test_orchestrator,zabbix

[osd]
osd data = $DIR/\$name
keyring = \$osd_data/keyring
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $OSD_SIZE
bluestore fsck on mount = false
# Small fixed caches and a ~900 MiB memory target (the default is 4 GiB per OSD).
bluestore cache autotune = false
bluestore cache size = 128M
osd memory target = 943718400
# Place each OSD on start: one host per datacenter (see the [osd.N] sections).
osd crush update on start = true
EOF
if ((${#DC_NAMES[@]} == 0)); then
	for ((i = 0; i < NUM_OSDS; i++)); do
		printf '\n[osd.%d]\ncrush location = root=default datacenter=dc%d host=node-dc%d\n' "$i" $((i + 1)) $((i + 1)) >>"$CONF"
	done
else
	for i in "${!DC_NAMES[@]}"; do
		printf '\n[mon.%s]\npublic addr = %s\n' "${DC_NAMES[i]}" "${DC_ADDRS[i]}" >>"$CONF"
		printf '\n[osd.%d]\npublic addr = %s\ncluster addr = %s\ncrush location = root=default datacenter=%s host=%s-ctl\n' \
			"$i" "${DC_ADDRS[i]}" "${DC_ADDRS[i]}" "${DC_NAMES[i]}" "${DC_NAMES[i]}" >>"$CONF"
	done
	printf '\n[mgr.x]\npublic addr = %s\n' "${DC_ADDRS[0]}" >>"$CONF"
	cat >>"$CONF" <<EOF

# ----- lab failure detection (README "Ceph across the datacenters" explains each option) -----
[global]
# OSDs ping their peers every second (default 6 s) and report a peer failed after 4 s of silence
# (default 20 s), so a PG whose primary's datacenter vanished peers again within ~5 s.
osd heartbeat interval = 1
osd heartbeat grace = 4
# Do not stretch that grace for OSDs with a history of being laggy (the default does, up to
# several times the grace, which a kill-dc/heal cycle would trigger).
mon osd adjust heartbeat grace = false
mon osd adjust down out interval = false
# A failure counts only when reported from another datacenter (default subtree: host): a
# partitioned datacenter cannot have the healthy ones marked down; with one OSD per datacenter
# the two survivors of a datacenter loss are exactly the 2 reporters needed.
mon osd reporter subtree level = datacenter
mon osd min down reporters = 2
# Monitors: detect a lost leader and elect a new one in ~2-3 s, not ~10 s (lease 5 s, election
# timeout 5 s), so map updates (the OSD going down) are not held up when the mon leader's
# datacenter is the one that died.
mon lease = 2
mon election timeout = 2
# Clients (QEMU's librbd, the agents' rbd calls) look for another monitor after 1 s, not 3 s.
mon client hunt interval = 1
EOF
fi

# All keys are created up front and imported into the mon's store by `ceph-mon --mkfs`, so no
# `ceph auth` round trips are needed later.
authtool() { ceph-authtool "$@" >/dev/null || die "ceph-authtool $* failed"; }
KEYS=$DIR/mkfs.keyring
rm -f "$KEYS"
authtool --create-keyring "$KEYS" --gen-key -n mon. --cap mon 'allow *'
authtool --create-keyring "$DIR/client.admin.keyring" --gen-key -n client.admin \
	--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
authtool --create-keyring "$DIR/client.$USER_NAME.keyring" --gen-key -n "client.$USER_NAME" \
	--cap mon 'profile rbd' --cap osd "profile rbd pool=$POOL"
mkdir -p "$DIR/mgr.x"
authtool --create-keyring "$DIR/mgr.x/keyring" --gen-key -n mgr.x \
	--cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *'
for ((i = 0; i < NUM_OSDS; i++)); do
	mkdir -p "$DIR/osd.$i"
	authtool --create-keyring "$DIR/osd.$i/keyring" --gen-key -n "osd.$i" \
		--cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
done
for k in "$DIR/client.admin.keyring" "$DIR/client.$USER_NAME.keyring" "$DIR/mgr.x/keyring" "$DIR"/osd.*/keyring; do
	authtool "$KEYS" --import-keyring "$k"
done
chmod 600 "$DIR"/*.keyring "$KEYS"

cat >"$DIR/env" <<EOF
CEPH_CONF=$CONF
CEPH_KEYRING=$DIR/client.$USER_NAME.keyring
CEPH_POOL=$POOL
CEPH_USER=$USER_NAME
CEPH_ADMIN_KEYRING=$DIR/client.admin.keyring
CEPH_MON_ADDR=$MON_ADDR
EOF
log "config and keys written (mon $MON_ADDR)"

# ---------------------------------------------------------------------------------------------
# 2. Mon.
# ---------------------------------------------------------------------------------------------
if ((${#DC_NAMES[@]} == 0)); then
	monmap_args=(--addv a "[$MON_ADDR]")
else
	monmap_args=()
	for i in "${!DC_NAMES[@]}"; do monmap_args+=(--addv "${DC_NAMES[i]}" "[v2:${DC_ADDRS[i]}:$CEPH_MON_PORT]"); done
fi
monmaptool --create --fsid "$FSID" "${monmap_args[@]}" "$DIR/monmap" >/dev/null || die "monmaptool failed"
for m in "${MONS[@]}"; do
	ceph-mon -c "$CONF" --mkfs -i "${m#mon.}" --monmap "$DIR/monmap" --keyring "$KEYS" >>"$DIR/log/$m.out" 2>&1 ||
		die "ceph-mon --mkfs -i ${m#mon.} failed"
done
rm -f "$KEYS"
for m in "${MONS[@]}"; do start_daemon "$m" || die "could not start $m"; done
wait_for "mon quorum" ceph_ mon stat

# ---------------------------------------------------------------------------------------------
# 3. Cluster layout in one `ceph` session (the CLI runs the lines of its stdin one by one): the
#    OSD ids, the datacenter rule, the pool. The OSDs place themselves into CRUSH when they start.
# ---------------------------------------------------------------------------------------------
cmds=""
for ((i = 0; i < NUM_OSDS; i++)); do
	uuid[i]=$(cat /proc/sys/kernel/random/uuid)
	cmds+="osd new ${uuid[i]} $i"$'\n'
done
cmds+="osd crush rule create-replicated rep-dc default datacenter
osd pool create $POOL $PG_NUM $PG_NUM replicated rep-dc
osd pool set $POOL size 3
osd pool set $POOL min_size 2
osd set-require-min-compat-client mimic
"
out=$(ceph_ 2>&1 <<<"$cmds") || die "ceph layout commands failed: $out"
if grep -q '^Error' <<<"$out"; then die "ceph layout commands failed: $out"; fi
log "osd ids, rule rep-dc and pool $POOL created"

# ---------------------------------------------------------------------------------------------
# 4. OSDs (mkfs in parallel) and the mgr.
# ---------------------------------------------------------------------------------------------
pids=()
for ((i = 0; i < NUM_OSDS; i++)); do
	ceph-osd -c "$CONF" -i "$i" --mkfs --osd-uuid "${uuid[i]}" >>"$DIR/log/osd.$i.out" 2>&1 &
	pids+=($!)
done
for ((i = 0; i < NUM_OSDS; i++)); do
	wait "${pids[i]}" || die "ceph-osd -i $i --mkfs failed"
done
log "osd mkfs done"
# Each daemon forks only once it has mounted its store: start them side by side.
pids=()
for d in "${DAEMONS[@]:${#MONS[@]}}"; do
	start_daemon "$d" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "a daemon failed to start"; done
log "osds and mgr started"

# `rbd pool init` needs the pool's PGs to be active.
wait_for "pool $POOL writable" rbd_ pool init "$POOL"
wait_ready

touch "$DIR/ready"
log "done"
print_env
