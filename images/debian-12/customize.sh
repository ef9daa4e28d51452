#!/bin/sh
# mmdebstrap --customize-hook for Kumo's debian-12 image: turns the bootstrapped tree
# ($1) into a cloud image that boots from partition 2 of its disk and lets cloud-init
# configure it from a NoCloud seed.
set -eu
root=$1
here=$(dirname "$0")
# The root filesystem, by MBR disk signature and partition number (build.sh writes
# both): the same name whether the disk is on virtio (vda2) or AHCI (sda2).
ROOT_PARTUUID=${ROOT_PARTUUID:?}

echo "PARTUUID=$ROOT_PARTUUID / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"

# cloud-init: Kumo's settings, and no modules that cost time for nothing here
# (grub-dpkg: there is no grub; keys-to-console: ssh fingerprints on the console;
# locale: the image has no locales package, so setting one fails).
install -m 644 "$here/90-kumo.cfg" "$root/etc/cloud/cloud.cfg.d/90-kumo.cfg"
sed -i -E '/^ *- *(grub[-_]dpkg|keys[-_]to[-_]console|locale) *$/d' "$root/etc/cloud/cloud.cfg"

# Periodic jobs that would only compete with tests.
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
	ln -sf /dev/null "$root/etc/systemd/system/$t"
done

# Per-instance identity is made at first boot: ssh host keys (cloud-init),
# machine-id (systemd), hostname (cloud-init). Don't ship the build host's.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo localhost >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

# ifupdown brings up what cloud-init writes to /etc/network/interfaces.d/.
cat >"$root/etc/network/interfaces" <<'EOT'
# cloud-init writes the NICs' configuration to interfaces.d/50-cloud-init.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
EOT
