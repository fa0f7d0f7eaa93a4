# The disk layout (sourced by build.sh). GPT, partition names fixed (the firmware's slot logic
# and fstab use /dev/disk/by-partlabel/<name>):
#   1 config    FAT   autoboot.txt (the Pi firmware picks boot_a or boot_b from it; tryboot)
#   2 boot_a    FAT   kernel, initrd, config.txt, cmdline-a.txt / cmdline-b.txt, Pi firmware + DTBs
#   3 boot_b    FAT   the same for slot B
#   4 system_a  erofs the read-only root of slot A
#   5 system_b  erofs slot B
#   6 data      ext4  /var/lib/handset: the flash store (key 0600) and the site's config
# Numbers are what autoboot.txt's boot_partition counts (2 = A, 3 = B).
CONFIG_MIB=32
BOOT_MIB=160
SYSTEM_MIB=640
DATA_MIB=256

# Stable ids from a name (reproducible, different per disk object).
slot_uuid() {
  local h
  h="$(printf 'handset:%s' "$1" | sha256sum | cut -c1-32)"
  printf '%s-%s-4%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}
vfat_id() { printf 'handset:%s' "$1" | sha256sum | cut -c1-8; }

# The boot partition's FAT image: the same bytes serve slot A and slot B (config.txt picks the
# command line by partition number), so one payload updates either slot.
make_boot_vfat() {
  local arch="$1" src="$2" out="$3"
  cat > "$src/config.txt" <<CFG
# Raspberry Pi firmware (Pi 4 / Pi 5 class, 64-bit): Debian's kernel and initrd.
[all]
arm_64bit=1
kernel=vmlinuz
initramfs initrd.img followkernel
enable_uart=1
[partition=2]
cmdline=cmdline-a.txt
[partition=3]
cmdline=cmdline-b.txt
[all]
CFG
  local console="console=tty0"
  [ "$arch" = arm64 ] && console="console=serial0,115200 console=tty1"
  for s in a b; do
    printf 'root=PARTLABEL=system_%s rootfstype=erofs ro rootwait %s quiet handset.slot=%s\n' "$s" "$console" "$s" > "$src/cmdline-$s.txt"
  done
  rm -f "$out"
  mkfs.vfat --invariant -C -n BOOT -i "$(vfat_id "boot-$arch")" "$out" $((BOOT_MIB * 1024)) >/dev/null
  find "$src" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  # Sorted, with the files' (fixed) times, so the FAT image is reproducible too.
  (cd "$src" && LC_ALL=C find . -mindepth 1 -type f | LC_ALL=C sort | while read -r f; do
    f="${f#./}"
    d="$(dirname "$f")"
    [ "$d" != . ] && mmd -D s -i "$out" "::$d" 2>/dev/null || true
    mcopy -m -i "$out" "$f" "::$f"
  done)
}

make_config_vfat() {
  local arch="$1" out="$2" work="$3"
  mkdir -p "$work/config"
  cat > "$work/config/autoboot.txt" <<CFG
[all]
tryboot_a_b=1
boot_partition=2
[tryboot]
boot_partition=3
CFG
  touch -d "@$SOURCE_DATE_EPOCH" "$work/config/autoboot.txt"
  rm -f "$out"
  mkfs.vfat --invariant -C -n CONFIG -i "$(vfat_id "config-$arch")" "$out" $((CONFIG_MIB * 1024)) >/dev/null
  mcopy -m -i "$out" "$work/config/autoboot.txt" ::autoboot.txt
}

# An empty data file system (the first boot makes the device identity on it).
make_data_ext4() {
  local arch="$1" out="$2"
  rm -f "$out"
  E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH" mke2fs -q -t ext4 -L data -U "$(slot_uuid "data-$arch")" \
    -E "root_owner=0:0,hash_seed=$(slot_uuid "data-hash-$arch")" "$out" "${DATA_MIB}M"
}

# Assemble the GPT disk image from the partition images (no loop devices needed).
assemble_disk() {
  local arch="$1" img="$2" boot="$3" system="$4" work="$5"
  local root_type
  case "$arch" in
    amd64) root_type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 ;;  # root x86-64 (discoverable partitions)
    arm64) root_type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE ;;  # root aarch64
  esac
  local fat=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 linux=0FC63DAF-8483-4772-8E79-3D69D8477DE4
  local sys_bytes
  sys_bytes="$(stat -c %s "$system")"
  if [ "$sys_bytes" -gt $((SYSTEM_MIB * 1024 * 1024)) ]; then
    echo "layout: the system slot ($sys_bytes bytes) is larger than its partition ($SYSTEM_MIB MiB)" >&2
    exit 1
  fi
  make_config_vfat "$arch" "$work/config.vfat" "$work"
  make_data_ext4 "$arch" "$work/data.ext4"
  local total=$((1 + CONFIG_MIB + 2 * BOOT_MIB + 2 * SYSTEM_MIB + DATA_MIB + 1))
  rm -f "$img"
  truncate -s "${total}M" "$img"
  sfdisk --quiet "$img" <<GPT
label: gpt
label-id: $(slot_uuid "disk-$arch")
unit: sectors
first-lba: 2048

start=2048, size=$((CONFIG_MIB * 2048)), type=$fat, name=config, uuid=$(slot_uuid "config-$arch")
size=$((BOOT_MIB * 2048)), type=$fat, name=boot_a, uuid=$(slot_uuid "boot_a-$arch")
size=$((BOOT_MIB * 2048)), type=$fat, name=boot_b, uuid=$(slot_uuid "boot_b-$arch")
size=$((SYSTEM_MIB * 2048)), type=$root_type, name=system_a, uuid=$(slot_uuid "system_a-$arch")
size=$((SYSTEM_MIB * 2048)), type=$root_type, name=system_b, uuid=$(slot_uuid "system_b-$arch")
size=$((DATA_MIB * 2048)), type=$linux, name=data, uuid=$(slot_uuid "data-$arch")
GPT
  # Both slots hold the same release at first; slot A is the one autoboot.txt names.
  local -a parts=("$work/config.vfat" "$boot" "$boot" "$system" "$system" "$work/data.ext4")
  local n=1
  for p in "${parts[@]}"; do
    local start
    start="$(sfdisk --json "$img" | node -e 'const t=JSON.parse(require("fs").readFileSync(0,"utf8")).partitiontable;process.stdout.write(String(t.partitions[Number(process.argv[1])-1].start))' "$n")"
    dd if="$p" of="$img" bs=1M seek=$((start / 2048)) conv=notrunc,sparse status=none
    n=$((n + 1))
  done
}
