#!/usr/bin/env bash
# Installs the Debian packages Kumo runs with (QEMU, firmware, qemu-img, genisoimage) and builds
# with (Node.js and npm for the browser console's bundle; Chromium for its tests), only when
# something is missing. The guest image builder installs its own build tools.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v genisoimage >/dev/null || need+=(genisoimage)
command -v isoinfo >/dev/null || need+=(genisoimage)
# The importer's tests decompress .xz images.
command -v xz >/dev/null || need+=(xz-utils)
[ -e /usr/share/OVMF/OVMF_CODE.fd ] || [ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
[ -e /usr/share/seabios/bios.bin ] || need+=(seabios)
# The tests build a bootable ISO installer from the tiny guest's kernel and initramfs.
command -v xorriso >/dev/null || need+=(xorriso)
command -v mcopy >/dev/null || need+=(mtools)
[ -e /usr/lib/ISOLINUX/isolinux.bin ] || need+=(isolinux)
[ -e /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need+=(syslinux-common)
# The browser console is bundled from npm packages (make ui); its tests drive a headless Chromium.
command -v npm >/dev/null || need+=(npm)
command -v node >/dev/null || need+=(nodejs)
command -v chromium >/dev/null || need+=(chromium)
# Replicated disks and the lab (make lab): Ceph daemons and clients, QEMU's rbd driver.
for p in ceph-mon ceph-osd ceph-mgr ceph-common qemu-block-extra; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
# The lab runs Ceph daemons in network namespaces with ip netns exec.
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
