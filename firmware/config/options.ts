/**
 * Every option of `handset run`, in one table (DESIGN.md "firmware/config/"): the dotted name is
 * the key's path in the JSON file (`network.dhcp.interface` is `{"network":{"dhcp":{"interface":
 * …}}}`), with its type, its default, whether it is a secret, and what it does. The typed
 * configuration the firmware reads (`HandsetConfig`) is derived from this table, so an option
 * cannot be read without being declared, typed and validated here. `handset config --defaults`
 * prints it; README.md carries the same table.
 *
 * The PIN is never configuration: it is typed at the keypad (or given to `handset provision` on
 * standard input), and lives only in the sign-in that uses it.
 */
import {
  dnsName,
  type HostPort,
  hostPort,
  hostPortText,
  httpsUrl,
  integer,
  ipAddress,
  type Kind,
  listOf,
  mapOf,
  oneOf,
  text,
} from "./kinds.ts";

export interface Option<T, Always extends boolean = boolean> {
  readonly kind: Kind<T>;
  /** The value when the file does not set it. */
  readonly default?: T;
  /** The file must set it (no default makes sense). */
  readonly required: boolean;
  /** Never printed, logged or echoed in an error (the reference says so). */
  readonly secret: boolean;
  readonly description: string;
  /** Type-level only: whether the typed value is always present. */
  readonly _always?: Always;
}

function withDefault<T>(kind: Kind<T>, value: T, description: string): Option<T, true> {
  return { kind, default: value, required: false, secret: false, description };
}

function required<T>(kind: Kind<T>, description: string): Option<T, true> {
  return { kind, required: true, secret: false, description };
}

function optional<T>(kind: Kind<T>, description: string): Option<T, false> {
  return { kind, required: false, secret: false, description };
}

export const OPTIONS = {
  board: withDefault(
    oneOf("pi", "sim"),
    "pi",
    'The hardware: "pi" (GPIO keypad, hook and LEDs, serial LCD; its pin-out is the board profile, board/pi/profile.ts, with HANDSET_GPIO_* / HANDSET_LCD_* overrides) or "sim" (the simulated board, for development).',
  ),
  storeDir: withDefault(
    text(),
    "/var/lib/handset",
    "Flash folder for the identity record (certificate and key 0600, registrars, last good time).",
  ),
  trustedRoots: required(
    listOf(text({ type: "path" }), { nonEmpty: true }),
    "PEM files of the root certificates the pool's and the SBA's server certificates chain to.",
  ),
  utcOffsetMinutes: withDefault(
    integer({ min: -720, max: 840, unit: "min" }),
    0,
    "Local time offset from UTC for the clock on the display.",
  ),
  "network.dhcp.interface": optional(
    text({ type: "interface" }),
    "Send DHCPINFORM on this interface (MS-UC-Client option 43, options 120 and 42). Without it and without network.dhcp.server, DHCP is not asked.",
  ),
  "network.dhcp.server": optional(
    hostPort,
    "Send DHCPINFORM to this server instead of broadcasting (a DHCP relay, or a lab).",
  ),
  "network.dhcpTimeoutMs": withDefault(
    integer({ min: 1_000, max: 120_000, unit: "ms" }),
    10_000,
    "How long one DHCPINFORM exchange may take before discovery goes on without it.",
  ),
  "network.ntp": optional(hostPort, "The SNTP server, instead of the ones DHCP option 42 names."),
  "network.dnsServer": optional(
    ipAddress,
    "The DNS server for SRV and A look-ups, instead of the system's resolvers.",
  ),
  "network.domain": optional(
    dnsName,
    "The SIP domain for the DNS fallback (SRV, then A records; also _ntp._udp); overrides DHCP option 15.",
  ),
  "network.staticRegistrars": optional(
    listOf(hostPort),
    "Registrars tried after those DHCP and DNS name (and before the one cached in flash), in order.",
  ),
  "network.staticCertProvUrl": optional(
    httpsUrl,
    "The certificate provisioning service (CertProvisioningService.svc) when DHCP option 43 names none.",
  ),
  "network.hosts": optional(
    mapOf(dnsName, hostPortText),
    "A static host table, name → IP:PORT, for a site without DNS; the server certificate must still carry the name.",
  ),
  "network.innerTls": withDefault(
    oneOf("1.2", "1.0", "auto"),
    "auto",
    'The TLS version inside the TLS-DSK tunnel: "auto" tries 1.2 and falls back to 1.0 for old pools.',
  ),
  "network.failbackProbeMs": optional(
    integer({ min: 1_000, max: 86_400_000, unit: "ms" }),
    "While on a backup registrar, how often to probe the home one (the account's default, 60 s, when unset).",
  ),
} as const satisfies Record<string, Option<unknown>>;

export type OptionName = keyof typeof OPTIONS;

type ValueOf<O> = O extends Option<infer T, infer Always> ? (Always extends true ? T : T | undefined) : never;

/** The validated configuration, keyed by the options' dotted names. */
export type HandsetConfig = { readonly [K in OptionName]: ValueOf<(typeof OPTIONS)[K]> };

export type { HostPort };
