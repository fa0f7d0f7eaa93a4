#!/usr/bin/env bash
# The initramfs, built once per image instead of at every package that asks for it.
#
#   initramfs-once.sh hold ROOT    (mmdebstrap --essential-hook, before the kernel is installed)
#   initramfs-once.sh build ROOT   (customize.sh, once everything is installed)
#
# While the packages install, the kernel's postinst and then the triggers of udev, kmod,
# systemd and raspi-firmware each run update-initramfs again; under qemu-user (arm64 on an x86
# build machine) each run copies a thousand modules through emulated processes, and those runs
# were most of the arm64 build's 15 minutes. `hold` diverts update-initramfs to a no-op (as
# live-build does); `build` puts Debian's back and runs it once for the installed kernel.
set -euo pipefail
what="$1"
root="$2"
tool=/usr/sbin/update-initramfs
case "$what" in
  hold)
    chroot "$root" dpkg-divert --local --rename --divert "$tool.distrib" --add "$tool" >/dev/null
    printf '#!/bin/sh\n# handset image build: update-initramfs runs once, at the end (initramfs-once.sh)\nexit 0\n' \
      > "$root$tool"
    chmod 0755 "$root$tool"
    ;;
  build)
    rm -f "$root$tool"
    chroot "$root" dpkg-divert --local --rename --divert "$tool.distrib" --remove "$tool" >/dev/null
    kver="$(basename "$(ls -d "$root"/usr/lib/modules/* | head -1)")"
    chroot "$root" "$tool" -c -k "$kver" >/dev/null
    [ -s "$root/boot/initrd.img-$kver" ] || { echo "initramfs-once.sh: no initrd for $kver" >&2; exit 1; }
    ;;
  *)
    echo "initramfs-once.sh: hold|build ROOT" >&2
    exit 2
    ;;
esac
