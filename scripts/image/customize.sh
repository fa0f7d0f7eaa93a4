#!/usr/bin/env bash
# mmdebstrap --customize-hook: turn the Debian root into the handset system slot.
#   $1: the root directory. Environment (from build.sh): HANDSET_ARCH, HANDSET_VERSION,
#   HANDSET_BUNDLE (the release bundle tar), HANDSET_OVERLAY (image/rootfs), HANDSET_KEYS
#   (update public keys, space-separated; may be empty), HANDSET_BOOT_OUT (where the kernel,
#   initrd and Pi firmware go: they live on the boot partition, not in the read-only slot).
set -euo pipefail
root="$1"

# The firmware: the bundle of this version, and `current` pointing at it (one version per slot).
install -d -m 0755 "$root/opt/handset/$HANDSET_VERSION"
tar -xf "$HANDSET_BUNDLE" -C "$root/opt/handset/$HANDSET_VERSION" --no-same-owner
chown -R 0:0 "$root/opt/handset"
ln -sfn "$HANDSET_VERSION" "$root/opt/handset/current"
mkdir -p "$HANDSET_BOOT_OUT"
cp "$root/opt/handset/$HANDSET_VERSION/MANIFEST.json" "$(dirname "$HANDSET_BOOT_OUT")/bundle-MANIFEST.json"

# Units, fstab, network, users, default config (no credentials in it).
cp -a --no-preserve=ownership "$HANDSET_OVERLAY/." "$root/"
printf '%s\n' "$HANDSET_VERSION" > "$root/etc/handset/version"
install -d -m 0755 "$root/etc/handset/update-keys"
i=0
for key in ${HANDSET_KEYS:-}; do
  install -m 0644 "$key" "$root/etc/handset/update-keys/key-$i.pem"
  i=$((i + 1))
done

chroot "$root" systemd-sysusers
chroot "$root" systemctl enable handset.service handset-firstboot.service handset-health.service handset-update.path \
  systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
# No login on a phone: no getty on the display's serial line (the board owns it); the console
# stays for the kernel and journald. Root's password stays locked ("*" from base-passwd).
chroot "$root" systemctl mask getty@.service serial-getty@.service >/dev/null 2>&1
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Kernel, initrd (with erofs, see build.sh) and on arm64 the Pi firmware and device trees: to the
# boot partition. /boot stays as an empty mount point in the slot.
kver="$(basename "$(ls -d "$root"/usr/lib/modules/* | head -1)")"
bash "$(dirname "$0")/initramfs-once.sh" build "$root"
cp "$root/boot/vmlinuz-$kver" "$HANDSET_BOOT_OUT/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$HANDSET_BOOT_OUT/initrd.img"
if [ "$HANDSET_ARCH" = arm64 ]; then
  if [ -d "$root/usr/lib/raspi-firmware" ]; then
    cp "$root"/usr/lib/raspi-firmware/*.elf "$root"/usr/lib/raspi-firmware/*.dat "$HANDSET_BOOT_OUT/" 2>/dev/null || true
    cp "$root"/usr/lib/raspi-firmware/*.bin "$HANDSET_BOOT_OUT/" 2>/dev/null || true
  fi
  for dtb in "$root/usr/lib/linux-image-$kver/broadcom/"bcm271[12]-rpi-*.dtb; do
    [ -e "$dtb" ] && cp "$dtb" "$HANDSET_BOOT_OUT/"
  done
fi
rm -rf "$root/boot"/* "$root/boot/firmware"
install -d -m 0755 "$root/boot/firmware" "$root/var/lib/handset"

# What must not be in a slot: the machine id (systemd makes one in /run at each boot of a
# read-only root), caches and logs of the build, apt's lists.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/var/cache/ldconfig/aux-cache"
rm -rf "$root/var/log/"* "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* "$root/var/cache/debconf/"*-old \
  "$root/tmp/"* "$root/var/tmp/"*
find "$root/var/log" "$root/var/cache" -type f -delete 2>/dev/null || true
