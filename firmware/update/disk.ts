/**
 * The disk, as paths (pure). On the phone each partition is /dev/disk/by-partlabel/<name> and
 * the config partition is mounted at /boot/firmware; a test (or a lab) points both at a
 * directory of plain files: DIR/<name> per partition, DIR/config/ as the mounted config
 * partition.
 */
export const PARTITION_NAMES = ["config", "boot_a", "boot_b", "system_a", "system_b", "data"] as const;
export type PartitionName = (typeof PARTITION_NAMES)[number];

export interface Disk {
  /** The path of a partition (a block device on the phone, a file in a test). */
  partition(name: string): string;
  /** Where the config partition (autoboot.txt, tryboot flag) is mounted. */
  configDir: string;
}

export const DEFAULT_PARTITION_DIR = "/dev/disk/by-partlabel";
export const DEFAULT_CONFIG_DIR = "/boot/firmware";

const join = (dir: string, name: string) => `${dir.replace(/\/+$/, "")}/${name}`;

/** The phone's disk (no argument) or a directory standing in for it. */
export function diskAt(dir?: string): Disk {
  const partitions = dir ?? DEFAULT_PARTITION_DIR;
  return {
    partition: (name) => {
      if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`bad partition name ${name}`);
      return join(partitions, name);
    },
    configDir: dir === undefined ? DEFAULT_CONFIG_DIR : join(dir, "config"),
  };
}
