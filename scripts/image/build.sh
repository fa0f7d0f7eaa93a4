#!/usr/bin/env bash
# `npm run image`: the flashable disk image of each architecture, from Debian's and npm's
# packages only, reproducibly (SOURCE_DATE_EPOCH; the system slot is bit-identical across builds).
#
#   scripts/image/build.sh [--arch amd64|arm64|all] [--out DIR] [--update-key PUBLIC.pem]...
#                          [--bundle-dir DIR (default dist/bundle)]
#
# Needs (as root): mmdebstrap, qemu-user-static + binfmt (arm64 on x86), erofs-utils, e2fsprogs,
# dosfstools, mtools, fdisk; the release bundle from `npm run build` (dist/bundle/<arch>.tar).
#
# Output per arch, in DIR (default dist/image/<arch>/):
#   handset-<version>-<arch>.img   GPT disk: config | boot_a | boot_b | system_a | system_b | data
#   system.erofs  boot.vfat        the slot payloads (what an update bundle carries)
#   MANIFEST.json                  version, sha256 of every file of the system slot and of the outputs
#   SBOM.json                      Debian packages with versions, the npm lockfile's packages
#
# No update key is built in unless --update-key names one: an image without a key refuses every
# update (there is never a default key).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

arches=(amd64 arm64)
out_root="$repo/dist/image"
keys=()
bundle_dir="$repo/dist/bundle"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ "$2" = all ] && arches=(amd64 arm64) || arches=("$2"); shift 2 ;;
    --out) out_root="$2"; shift 2 ;;
    --update-key) keys+=("$(realpath "$2")"); shift 2 ;;
    --bundle-dir) bundle_dir="$(realpath "$2")"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "build.sh: must run as root (mmdebstrap --mode=root, loop-free mkfs)" >&2; exit 1; }
for tool in mmdebstrap mkfs.erofs mke2fs mkfs.vfat mcopy mmd sfdisk; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (apt-get install mmdebstrap erofs-utils e2fsprogs dosfstools mtools fdisk)" >&2; exit 1; }
done

version="$(node -p 'require(process.argv[1]).version' "$repo/package.json")"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1767225600)"
fi
export SOURCE_DATE_EPOCH
# Debian's suite: trixie (Debian 13, nodejs 20.19 — the Node our engines field asks for;
# bookworm's nodejs 18 is past its end of life). Security updates included: the same day's
# builds agree; a later build carries the later fixes (the SBOM says which).
suite=trixie
mirror=http://deb.debian.org/debian

. "$here/layout.sh"

build_arch() {
  local arch="$1"
  local out="$out_root/$arch"
  local work="$out/.work"
  local bundle="$bundle_dir/$arch.tar"
  [ -f "$bundle" ] || { echo "build.sh: $bundle is missing: run npm run build first" >&2; exit 1; }
  if [ "$arch" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
      echo "build.sh: arm64 needs qemu-user-static registered with binfmt (update-binfmts --enable qemu-aarch64)" >&2
      exit 1
    }
  fi
  rm -rf "$work" && mkdir -p "$work" "$out"
  local t0=$SECONDS

  local pkgs="systemd,systemd-sysv,systemd-resolved,udev,kmod,nodejs,initramfs-tools,linux-image-$arch"
  local components="main"
  if [ "$arch" = arm64 ]; then
    # The Raspberry Pi boot firmware (start4.elf, fixup4.dat…) is Debian's raspi-firmware, in
    # non-free-firmware; the kernel and device trees are Debian's linux-image-arm64.
    pkgs="$pkgs,raspi-firmware"
    components="main non-free-firmware"
  fi

  echo "image: $arch: root filesystem (mmdebstrap $suite, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)" >&2
  HANDSET_ARCH="$arch" HANDSET_VERSION="$version" HANDSET_BUNDLE="$bundle" HANDSET_OVERLAY="$repo/image/rootfs" \
    HANDSET_KEYS="${keys[*]:-}" HANDSET_BOOT_OUT="$work/boot" \
    mmdebstrap --mode=root --format=directory --variant=essential --arch="$arch" \
    --components="$components" --include="$pkgs" \
    --essential-hook='mkdir -p "$1/usr/share/initramfs-tools/modules.d" && printf "erofs\n" > "$1/usr/share/initramfs-tools/modules.d/handset"' \
    --essential-hook="bash '$here/initramfs-once.sh' hold \"\$1\"" \
    --customize-hook="bash '$here/customize.sh' \"\$1\"" \
    "$suite" "$work/rootfs" \
    "deb $mirror $suite $components" \
    "deb $mirror $suite-updates $components" \
    "deb http://deb.debian.org/debian-security $suite-security $components" \
    > "$work/mmdebstrap.log" 2>&1 || { tail -30 "$work/mmdebstrap.log" >&2; exit 1; }

  echo "image: $arch: system slot (erofs)" >&2
  # Fixed UUID and timestamps: the same tree gives the same bytes.
  mkfs.erofs -zlz4hc -T"$SOURCE_DATE_EPOCH" -U "$(slot_uuid "system-$arch")" \
    "$out/system.erofs" "$work/rootfs" > "$work/mkfs-erofs.log" 2>&1 || { cat "$work/mkfs-erofs.log" >&2; exit 1; }

  echo "image: $arch: boot partition (FAT)" >&2
  make_boot_vfat "$arch" "$work/boot" "$out/boot.vfat"

  echo "image: $arch: disk" >&2
  local img="$out/handset-$version-$arch.img"
  assemble_disk "$arch" "$img" "$out/boot.vfat" "$out/system.erofs" "$work"

  echo "image: $arch: manifest and SBOM" >&2
  node "$here/manifest.mjs" --arch "$arch" --version "$version" --rootfs "$work/rootfs" \
    --out "$out" --lockfile "$repo/package-lock.json" --bundle-manifest "$work/bundle-MANIFEST.json" \
    --build-seconds "$((SECONDS - t0))"
  rm -rf "$work/rootfs"
  echo "image: $arch: done in $((SECONDS - t0)) s: $img" >&2
}

for a in "${arches[@]}"; do build_arch "$a"; done
