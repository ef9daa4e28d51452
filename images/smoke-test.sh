#!/usr/bin/env bash
# shellcheck disable=SC2015,SC2016  # pass/fail never fail; $((..)) is for the guest
# Boots kumo-tiny.qcow2 under QEMU (TCG) the ways Kumo uses it and checks what the
# guest promises: boot from its own disk through SeaBIOS, the NoCloud seed applied
# (marker line), ssh with the seed's keys, a shell on the serial console,
# power_state, ACPI power button (QMP system_powerdown) and poweroff -f.
#
#   images/smoke-test.sh [IMAGE]   (default: $KUMO_IMAGES_DIR/kumo-tiny.qcow2)
#
# Needs qemu-system-x86, genisoimage, openssh-client, python3. Uses TCG always
# (KVM hangs on Kumo's dev machines). SSH_PORT (default 2222) on 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${KUMO_IMAGES_DIR:-$HERE/../_output/images}
IMAGE=${1:-$OUT/kumo-tiny.qcow2}
SSH_PORT=${SSH_PORT:-2222}
MARKER_TIMEOUT=60 # seconds; the marker normally comes after ~5-10 s under TCG

[ -f "$IMAGE" ] || { echo "no image $IMAGE (run make images)" >&2; exit 1; }
T=$(mktemp -d /tmp/kumo-smoke.XXXXXX)
QEMU_PID=
cleanup() {
	[ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

FAILED=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILED=1; }

# QMP and the serial console, over their unix sockets.
cat >"$T/qmp.py" <<'EOF'
import json, socket, sys, time
def qmp(path, *cmds):
    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile("rw")
    f.readline()
    out = None
    for c in ("qmp_capabilities",) + cmds:
        f.write(json.dumps({"execute": c}) + "\n"); f.flush()
        while True:
            m = json.loads(f.readline())
            if "return" in m or "error" in m: break
        out = m
    return out
def serial(path, line, expect, timeout=10):
    s = socket.socket(socket.AF_UNIX); s.connect(path); s.settimeout(0.5)
    s.sendall(b"\r\n" + line.encode() + b"\r\n")
    buf, end = b"", time.time() + timeout
    while time.time() < end and expect.encode() not in buf:
        try: buf += s.recv(4096)
        except socket.timeout: pass
    return expect.encode() in buf
if sys.argv[1] == "qmp":
    r = qmp(sys.argv[2], *sys.argv[3:])
    print(r.get("return", {}).get("status", "") if isinstance(r.get("return"), dict) else r)
elif sys.argv[1] == "serial":
    sys.exit(0 if serial(sys.argv[2], sys.argv[3], sys.argv[4]) else 1)
EOF

# seed NAME HOSTNAME INSTANCE_ID USER_DATA_EXTRA: NoCloud ISO with two ssh keys.
ssh-keygen -q -t ed25519 -N '' -f "$T/key1" -C smoke1
ssh-keygen -q -t ed25519 -N '' -f "$T/key2" -C smoke2
seed() {
	local d=$T/seed-$1
	mkdir -p "$d"
	printf 'instance-id: %s\nlocal-hostname: %s\n' "$3" "$2" >"$d/meta-data"
	{
		echo '#cloud-config'
		echo 'ssh_authorized_keys:'
		echo "  - $(cat "$T/key1.pub")"
		echo "  - \"$(cat "$T/key2.pub")\""
		printf '%b' "${4:-}"
	} >"$d/user-data"
	genisoimage -quiet -output "$T/$1.iso" -volid cidata -joliet -rock "$d/user-data" "$d/meta-data"
}

# boot NAME QEMU_ARGS...: starts QEMU on a copy-on-write overlay of the image.
boot() {
	local name=$1
	shift
	qemu-img create -q -f qcow2 -F qcow2 -b "$(realpath "$IMAGE")" "$T/$name.qcow2"
	rm -f "$T/serial.log" "$T/serial.sock" "$T/qmp.sock"
	BOOT_START=$(date +%s.%N)
	qemu-system-x86_64 -accel tcg -machine q35 -m 256 -display none -monitor none \
		-chardev "socket,id=ser0,path=$T/serial.sock,server=on,wait=off,logfile=$T/serial.log" \
		-serial chardev:ser0 -qmp "unix:$T/qmp.sock,server=on,wait=off" \
		"$@" </dev/null >"$T/qemu.out" 2>&1 &
	QEMU_PID=$!
}

# wait_marker PATTERN: seconds from boot until PATTERN is on the serial console.
wait_marker() {
	local end=$((SECONDS + MARKER_TIMEOUT))
	while [ $SECONDS -lt $end ]; do
		if grep -q "$1" "$T/serial.log" 2>/dev/null; then
			echo "$(date +%s.%N) $BOOT_START" | awk '{ printf "%.1f", $1 - $2 }'
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# wait_exit SECONDS: true if QEMU exits by itself within SECONDS.
wait_exit() {
	local end=$((SECONDS + $1))
	while [ $SECONDS -lt $end ]; do
		kill -0 "$QEMU_PID" 2>/dev/null || { wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=; return 0; }
		sleep 0.2
	done
	return 1
}

stop() { [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null; QEMU_PID=; true; }

marker_count() { grep -c 'KUMO-GUEST-READY' "$T/serial.log" || true; }

# 1. virtio disk, seed as AHCI CD-ROM, virtio NIC: marker, ssh, serial shell, power button.
seed a tiny-a i-aaaa
boot a -drive "file=$T/a.qcow2,if=virtio,format=qcow2" \
	-drive "if=none,id=cd,file=$T/a.iso,media=cdrom,readonly=on" -device ide-cd,drive=cd,bus=ide.1 \
	-nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22"
want='KUMO-GUEST-READY hostname=tiny-a instance-id=i-aaaa keys=2'
if t=$(wait_marker "$want"); then pass "virtio disk + AHCI CD seed: marker after ${t}s"; else fail "no '$want'"; fi
sleep 1
[ "$(marker_count)" = 1 ] && pass "exactly one marker line" || fail "$(marker_count) marker lines"
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR -p "$SSH_PORT")
for k in key1 key2; do
	h=$(ssh "${ssh_opts[@]}" -i "$T/$k" root@127.0.0.1 hostname 2>&1) || true
	[ "$h" = tiny-a ] && pass "ssh with $k: hostname=$h" || fail "ssh with $k: $h"
done
perm=$(ssh "${ssh_opts[@]}" -i "$T/key1" root@127.0.0.1 'stat -c %a /root/.ssh /root/.ssh/authorized_keys | tr "\n" " "' 2>&1) || true
[ "$perm" = "700 600 " ] && pass "/root/.ssh 700, authorized_keys 600" || fail "permissions: $perm"
python3 "$T/qmp.py" serial "$T/serial.sock" 'echo serial-$((40+2))' 'serial-42' &&
	pass "serial console shell answers" || fail "serial console shell"
python3 "$T/qmp.py" qmp "$T/qmp.sock" system_powerdown >/dev/null
wait_exit 20 && pass "system_powerdown (ACPI power button) powers off" || fail "still running after system_powerdown"
stop

# 2. Disk on q35's AHCI, seed as a virtio disk, no NIC, power_state poweroff.
seed b tiny-b i-bbbb 'power_state:\n  delay: now\n  mode: poweroff\n  message: bye\n'
boot b -drive "if=none,id=d0,file=$T/b.qcow2,format=qcow2" -device ide-hd,drive=d0,bus=ide.0 \
	-drive "file=$T/b.iso,if=virtio,format=raw,readonly=on" -nic none
want='KUMO-GUEST-READY hostname=tiny-b instance-id=i-bbbb keys=2'
if t=$(wait_marker "$want"); then pass "AHCI disk + virtio seed, no NIC: marker after ${t}s"; else fail "no '$want'"; fi
wait_exit 20 && pass "power_state poweroff: QEMU exited" || fail "power_state poweroff: QEMU still running"
stop

# 3. power_state reboot: the guest comes back (second marker).
seed c tiny-c i-cccc 'power_state:\n  mode: reboot\n'
boot c -drive "file=$T/c.qcow2,if=virtio,format=qcow2" \
	-drive "if=none,id=cd,file=$T/c.iso,media=cdrom,readonly=on" -device ide-cd,drive=cd,bus=ide.1 -nic none
wait_marker 'KUMO-GUEST-READY hostname=tiny-c' >/dev/null || fail "power_state reboot: no first marker"
end=$((SECONDS + MARKER_TIMEOUT))
while [ "$(marker_count)" -lt 2 ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
[ "$(marker_count)" -ge 2 ] && pass "power_state reboot: guest rebooted" || fail "power_state reboot: no second boot"
stop

# 4. No seed at all, -no-shutdown: marker with none values; poweroff -f typed on the
#    serial console leaves QEMU in status "shutdown".
boot d -drive "file=$T/d.qcow2,if=virtio,format=qcow2" -nic none -no-shutdown
want='KUMO-GUEST-READY hostname=none instance-id=none keys=0'
if t=$(wait_marker "$want"); then pass "no seed: '$want' after ${t}s"; else fail "no '$want'"; fi
python3 "$T/qmp.py" serial "$T/serial.sock" 'poweroff -f' 'Power down' || true
sleep 1
st=$(python3 "$T/qmp.py" qmp "$T/qmp.sock" query-status)
[ "$st" = shutdown ] && pass "poweroff -f: QMP status shutdown" || fail "poweroff -f: QMP status '$st'"
stop

[ "$FAILED" = 0 ] && echo "smoke test passed" || { echo "smoke test FAILED (serial log of the last boot:)"; cat "$T/serial.log"; exit 1; }
