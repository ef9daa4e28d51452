#!/usr/bin/env bash
# Builds Kumo's guest test images into a cache directory. Every image is a bootable
# disk with its own bootloader: QEMU boots it through SeaBIOS, never with -kernel.
#
#   images/build.sh [kumo-tiny | debian-12 | debian-12-cloud | all]   (default: kumo-tiny)
#
#   kumo-tiny.qcow2  Debian kernel + busybox/dropbear initramfs on a FAT partition
#                    booted by syslinux. Applies a NoCloud seed and prints
#                    "KUMO-GUEST-READY hostname=… instance-id=… keys=N" on ttyS0.
#   debian-12.qcow2  Debian 12 with cloud-init (mmdebstrap): syslinux FAT boot
#                    partition + ext4 root partition. Prints "Cloud-init v. …
#                    finished at" on ttyS0; default user "debian".
#   debian-12-cloud.qcow2  The same on Debian's cloud kernel (linux-image-cloud-amd64,
#                    as in Debian's genericcloud images): no AHCI driver, so it reads
#                    the NoCloud seed only where Kumo puts it for Linux (a virtio disk).
#
# Environment:
#   KUMO_IMAGES_DIR  cache/output directory (default: <repo>/_output/images)
#   FORCE=1          rebuild even if the image is up to date
#   KUMO_KERNEL_ABI  kernel ABI for kumo-tiny (default: what linux-image-amd64 depends on)
#   KUMO_DEBIAN_MIRROR, KUMO_DEBIAN_SECURITY_MIRROR  apt mirrors for debian-12
#
# An image is up to date when it exists and its .stamp holds the hash of this script
# and of the image's input files. Downloaded .debs are kept in the cache directory.
# Needs root (apt-get, mmdebstrap); missing tools are installed with apt-get.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=${KUMO_IMAGES_DIR:-$REPO/_output/images}
FORCE=${FORCE:-0}

# Both images are MBR disks with syslinux's MBR boot code and a FAT boot partition at
# 1 MiB that holds the kernel, the initramfs and syslinux. All of it is written into
# image files with mtools, sfdisk, dd and mkfs -d: no loop devices, no mounts (which
# extlinux and grub-install would need). DISK_ID is the MBR disk signature
# (debian-12 finds its root partition by it) and the FAT volume id.
PART_START_SECTOR=2048
DISK_ID=4b554d4f
SYSLINUX_MBR=/usr/lib/syslinux/mbr/mbr.bin

# Kernel modules for kumo-tiny's initramfs (their dependencies are added): disks and
# CD-ROMs on virtio or AHCI, NICs, entropy, the ACPI power button.
TINY_MODULES="virtio_pci virtio_blk virtio_net virtio_scsi virtio_rng isofs sr_mod cdrom
	ahci libahci libata sd_mod e1000e button evdev"
TINY_DISK_MIB=64

# Packages installed into debian-12 and debian-12-cloud, with the image's kernel: the
# generic one (linux-image-amd64, with AHCI) or the cloud one (linux-image-cloud-amd64,
# virtio only, like Debian's genericcloud images).
DEBIAN_PACKAGES="systemd-sysv udev dbus cloud-init openssh-server
	ifupdown isc-dhcp-client iproute2 netbase sudo ca-certificates initramfs-tools"
DEBIAN_DISK_GIB=2
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${KUMO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${KUMO_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Host tools
# ---------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		apt-get update -qq
		APT_UPDATED=1
	fi
}

# need CMD:PACKAGE...: installs the packages whose command is missing.
need() {
	local missing=() spec cmd pkg
	for spec in "$@"; do
		cmd=${spec%%:*} pkg=${spec#*:}
		if [[ $cmd == /* ]]; then [ -e "$cmd" ] && continue
		else command -v "$cmd" >/dev/null 2>&1 && continue; fi
		missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing packages ${missing[*]} and not root to install them"
	apt_update_once
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# fetch_deb PACKAGE: path of PACKAGE's .deb in the cache, downloaded once.
fetch_deb() {
	local pkg=$1 deb
	mkdir -p "$OUT/debs"
	deb=$(find "$OUT/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
	if [ -z "$deb" ]; then
		log "downloading $pkg"
		(cd "$OUT/debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null) ||
			{ apt_update_once; (cd "$OUT/debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null); }
		deb=$(find "$OUT/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
		[ -n "$deb" ] || die "apt-get download $pkg left no .deb"
	fi
	echo "$deb"
}

# remove_tree DIR: rm -rf that never goes into a mounted filesystem. mmdebstrap
# mounts /proc, /sys and /dev inside its tree; an interrupted run may leave them.
remove_tree() {
	local dir=$1 m
	[ -e "$dir" ] || return 0
	findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r |
		while read -r m; do umount -l "$m" || true; done
	rm -rf --one-file-system "$dir"
}

# ---------------------------------------------------------------------------
# Caching
# ---------------------------------------------------------------------------

# inputs_hash IMAGE: hash of this script and the image's own input files (debian-12-cloud
# is made from debian-12's).
inputs_hash() {
	local name=$1 dir=$1
	[ "$name" = debian-12-cloud ] && dir=debian-12
	{
		sha256sum "$HERE/build.sh"
		[ -d "$HERE/$dir" ] && find "$HERE/$dir" -type f | LC_ALL=C sort | xargs -r sha256sum
	} | sed "s|$HERE/||" | sha256sum | cut -d' ' -f1
}

up_to_date() {
	local name=$1
	[ "$FORCE" != 1 ] && [ -f "$OUT/$name.qcow2" ] && [ -f "$OUT/$name.stamp" ] &&
		[ "$(cat "$OUT/$name.stamp")" = "$(inputs_hash "$name")" ]
}

# ---------------------------------------------------------------------------
# Disk assembly
# ---------------------------------------------------------------------------

# make_mbr_disk DISK SIZE_MIB SFDISK_PARTITIONS: raw disk with an MBR partition
# table (disk signature DISK_ID) and syslinux's MBR boot code, which chain-loads the
# boot sector of the active ("bootable") partition.
make_mbr_disk() {
	local disk=$1 mib=$2 parts=$3
	rm -f "$disk"
	truncate -s "${mib}M" "$disk"
	printf 'label: dos\nlabel-id: 0x%s\n%s\n' "$DISK_ID" "$parts" |
		sfdisk --quiet --no-reread --no-tell-kernel "$disk"
	dd if="$SYSLINUX_MBR" of="$disk" bs=440 count=1 conv=notrunc status=none
}

# put_partition DISK START_SECTOR FS_IMAGE: writes a filesystem image into the disk.
put_partition() {
	dd if="$3" of="$1" bs=1M seek=$(($2 * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
}

# make_syslinux_fat FAT_IMAGE SIZE_MIB START_SECTOR LABEL FILES...: a FAT filesystem
# image holding FILES (one of them syslinux.cfg), made bootable by syslinux - all
# without mounting anything (mtools). -h: hidden sectors = where the partition
# starts, as the boot sector of a partition must say.
make_syslinux_fat() {
	local fat=$1 mib=$2 start=$3 label=$4
	shift 4
	rm -f "$fat"
	mkfs.vfat -C "$fat" $((mib * 1024)) -n "$label" -h "$start" -i "$DISK_ID" >/dev/null
	MTOOLS_SKIP_CHECK=1 mcopy -i "$fat" "$@" ::/
	MTOOLS_SKIP_CHECK=1 syslinux --install "$fat"
}

# ---------------------------------------------------------------------------
# kumo-tiny
# ---------------------------------------------------------------------------

kernel_abi() {
	local abi=${KUMO_KERNEL_ABI:-}
	if [ -z "$abi" ]; then
		abi=$(apt-cache depends linux-image-amd64 2>/dev/null |
			sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
	fi
	if [ -z "$abi" ]; then
		apt_update_once
		abi=$(apt-cache depends linux-image-amd64 |
			sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
	fi
	[ -n "$abi" ] || die "cannot tell which kernel Debian ships (apt-cache depends linux-image-amd64)"
	echo "$abi"
}

# kernel_tree ABI: the unpacked linux-image-ABI package (cached), with modules.dep.
kernel_tree() {
	local abi=$1 tree=$OUT/cache/linux-image-$1 deb
	if [ ! -f "$tree/.done" ]; then
		deb=$(fetch_deb "linux-image-$abi")
		log "unpacking $(basename "$deb")"
		rm -rf "$tree"
		mkdir -p "$tree"
		dpkg-deb -x "$deb" "$tree"
		depmod -b "$tree" "$abi"
		touch "$tree/.done"
	fi
	echo "$tree"
}

# copy_with_libs ROOT BINARY...: copies binaries into ROOT/bin with the shared
# libraries (and the dynamic loader) ldd lists, at the same paths as on the host.
copy_with_libs() {
	local root=$1 bin lib
	shift
	for bin in "$@"; do
		cp "$bin" "$root/bin/"
		for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done
	done
}

# build_tiny_initramfs ROOT KERNEL_TREE ABI
build_tiny_initramfs() {
	local root=$1 tree=$2 abi=$3 a ko rel
	mkdir -p "$root"/{bin,dev,etc,proc,sys,run,tmp,mnt,root,var/log,lib/modules,usr}
	ln -s bin "$root/sbin"
	ln -s ../bin "$root/usr/bin"
	ln -s ../bin "$root/usr/sbin"
	chmod 1777 "$root/tmp"
	chmod 700 "$root/root"
	# The kernel opens /dev/console before /init runs (devtmpfs is mounted later).
	mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

	# busybox (static): one symlink per applet.
	file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not busybox-static"
	cp /bin/busybox "$root/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
	done

	copy_with_libs "$root" /usr/sbin/dropbear /usr/bin/dropbearkey

	# Kernel modules and what they depend on, then a modules.dep for busybox modprobe.
	# shellcheck disable=SC2086
	for a in $TINY_MODULES; do
		modprobe -d "$tree" -S "$abi" --show-depends "$a" ||
			die "kernel module $a not found in linux-image-$abi"
	done | awk '$1 == "insmod" { print $2 }' | sort -u | while read -r ko; do
		rel=${ko#"$tree"/}
		mkdir -p "$root/$(dirname "$rel")"
		cp "$ko" "$root/$rel"
	done
	cp "$tree/lib/modules/$abi"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$abi/"
	depmod -b "$root" "$abi"

	install -m 755 "$HERE/kumo-tiny/init" "$root/init"
	install -m 755 "$HERE/kumo-tiny/udhcpc.script" "$root/etc/udhcpc.script"
	install -D -m 755 "$HERE/kumo-tiny/power-button" "$root/etc/acpi/PWRF/00000080"
	# dropbear rejects accounts with an empty password field, even for keys: "*" =
	# no password login, keys only.
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:*:19000:0:99999:7:::' >"$root/etc/shadow"
	chmod 600 "$root/etc/shadow"
	echo 'root:x:0:' >"$root/etc/group"
	printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
	echo '127.0.0.1 localhost' >"$root/etc/hosts"
	cat >"$root/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PS1='\h:\w\$ '
EOF
}

build_kumo_tiny() {
	local name=kumo-tiny work abi tree
	if up_to_date "$name"; then
		log "$name is up to date"
		return 0
	fi
	need dpkg-deb:dpkg apt-get:apt /bin/busybox:busybox-static /usr/sbin/dropbear:dropbear-bin \
		/usr/bin/dropbearkey:dropbear-bin cpio:cpio gzip:gzip modprobe:kmod depmod:kmod \
		file:file syslinux:syslinux "$SYSLINUX_MBR":syslinux-common mkfs.vfat:dosfstools \
		mcopy:mtools sfdisk:fdisk qemu-img:qemu-utils

	local start=$SECONDS
	work=$OUT/work/$name
	remove_tree "$work"
	mkdir -p "$work"
	abi=$(kernel_abi)
	tree=$(kernel_tree "$abi")
	log "building $name (kernel $abi)"

	build_tiny_initramfs "$work/initramfs" "$tree" "$abi"
	(cd "$work/initramfs" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -1 -n >"$work/initrd.gz"
	cp "$tree/boot/vmlinuz-$abi" "$work/vmlinuz"

	# syslinux.cfg: boot the one entry at once, console on the first serial port.
	cat >"$work/syslinux.cfg" <<'EOF'
DEFAULT kumo
PROMPT 0
TIMEOUT 0
LABEL kumo
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet
EOF

	# One partition: FAT16 (LBA), bootable.
	make_syslinux_fat "$work/boot.fat" $((TINY_DISK_MIB - 1)) "$PART_START_SECTOR" KUMOBOOT \
		"$work/vmlinuz" "$work/initrd.gz" "$work/syslinux.cfg"
	make_mbr_disk "$work/disk.raw" "$TINY_DISK_MIB" "start=$PART_START_SECTOR, type=e, bootable"
	put_partition "$work/disk.raw" "$PART_START_SECTOR" "$work/boot.fat"
	qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/$name.qcow2"

	mv -f "$work/$name.qcow2" "$OUT/$name.qcow2"
	inputs_hash "$name" >"$OUT/$name.stamp"
	log "built $name in $((SECONDS - start)) s (initramfs $(du -k "$work/initrd.gz" | cut -f1) KiB)"
	remove_tree "$work"
}

# ---------------------------------------------------------------------------
# debian-12
# ---------------------------------------------------------------------------

# build_debian NAME KERNEL_PACKAGE: debian-12 (generic kernel) or debian-12-cloud (cloud
# kernel); both from the same hooks in debian-12/.
build_debian() {
	local name=$1 kernel=$2 work debs rootfs kver boot_mib=64 root_start disk_mib q
	if up_to_date "$name"; then
		log "$name is up to date"
		return 0
	fi
	need mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs syslinux:syslinux "$SYSLINUX_MBR":syslinux-common \
		mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk qemu-img:qemu-utils

	local start=$SECONDS
	work=$OUT/work/$name
	debs=$OUT/debs/debian-12
	rootfs=$work/rootfs
	remove_tree "$work"
	mkdir -p "$work" "$debs"
	log "building $name with mmdebstrap (a few minutes the first time)"

	# The .debs are kept in $debs: copied in before apt runs (apt skips what is
	# there already) and copied back out before mmdebstrap's cleanup.
	q=$(printf '%q' "$debs")
	# shellcheck disable=SC2086
	ROOT_PARTUUID=$DISK_ID-02 mmdebstrap --variant=minbase --mode=root --quiet \
		--include="$(echo $DEBIAN_PACKAGES $kernel | tr ' ' ,)" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--skip=essential/unlink \
		--setup-hook="mkdir -p \"\$1/var/cache/apt/archives\" && find $q -name '*.deb' -exec cp -t \"\$1/var/cache/apt/archives/\" {} +" \
		--essential-hook="$HERE/debian-12/essential.sh" \
		--customize-hook="$HERE/debian-12/customize.sh" \
		--customize-hook="find \"\$1/var/cache/apt/archives\" -maxdepth 1 -name '*.deb' -exec cp -n -t $q {} +" \
		"$DEBIAN_SUITE" "$rootfs" \
		"deb $DEBIAN_MIRROR $DEBIAN_SUITE main" \
		"deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main" \
		"deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main"

	kver=$(find "$rootfs/boot" -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
	if [ -z "$kver" ] || [ ! -f "$rootfs/boot/initrd.img-$kver" ]; then
		die "$name: no kernel/initramfs in /boot"
	fi
	cp "$rootfs/boot/vmlinuz-$kver" "$work/vmlinuz"
	cp "$rootfs/boot/initrd.img-$kver" "$work/initrd.img"
	cat >"$work/syslinux.cfg" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=PARTUUID=$DISK_ID-02 rw console=ttyS0
EOF

	# Partition 1: FAT boot partition (syslinux, kernel, initramfs), bootable; not
	# mounted in the guest (a kernel upgrade inside a VM does not change what boots).
	# Partition 2: the ext4 root filesystem, made from the tree by mkfs.ext4 -d.
	root_start=$((PART_START_SECTOR + boot_mib * 2048))
	disk_mib=$((DEBIAN_DISK_GIB * 1024))
	make_syslinux_fat "$work/boot.fat" "$boot_mib" "$PART_START_SECTOR" KUMOBOOT \
		"$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg"
	mkfs.ext4 -q -L root -d "$rootfs" "$work/root.ext4" $(((disk_mib - 1 - boot_mib) * 1024))k >/dev/null
	make_mbr_disk "$work/disk.raw" "$disk_mib" "start=$PART_START_SECTOR, size=$((boot_mib * 2048)), type=e, bootable
start=$root_start, type=83"
	put_partition "$work/disk.raw" "$PART_START_SECTOR" "$work/boot.fat"
	put_partition "$work/disk.raw" "$root_start" "$work/root.ext4"
	qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/$name.qcow2"

	mv -f "$work/$name.qcow2" "$OUT/$name.qcow2"
	inputs_hash "$name" >"$OUT/$name.stamp"
	log "built $name in $((SECONDS - start)) s (kernel $kver, initramfs $(du -k "$work/initrd.img" | cut -f1) KiB)"
	remove_tree "$work"
}

# ---------------------------------------------------------------------------

main() {
	local target=${1:-kumo-tiny} built=()
	case "$target" in
	kumo-tiny | debian-12 | debian-12-cloud | all) ;;
	-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
	*) die "unknown image '$target' (kumo-tiny, debian-12, debian-12-cloud, all)" ;;
	esac
	mkdir -p "$OUT"
	# One build at a time per cache directory.
	exec 9>"$OUT/.lock"
	flock 9

	if [ "$target" = kumo-tiny ] || [ "$target" = all ]; then
		build_kumo_tiny
		built+=("$OUT/kumo-tiny.qcow2")
	fi
	if [ "$target" = debian-12 ] || [ "$target" = all ]; then
		build_debian debian-12 linux-image-amd64
		built+=("$OUT/debian-12.qcow2")
	fi
	if [ "$target" = debian-12-cloud ] || [ "$target" = all ]; then
		build_debian debian-12-cloud linux-image-cloud-amd64
		built+=("$OUT/debian-12-cloud.qcow2")
	fi
	rmdir "$OUT/work" 2>/dev/null || true
	printf '%s\n' "${built[@]}"
}

main "$@"
