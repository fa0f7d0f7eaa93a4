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
  KindMismatch,
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
  /**
   * Whether an operator may set it over MQTT (`config/desired`, issue 11): "live" applies at
   * once, "idle" at the phone's next idle moment (the phone core restarts with it, never during a
   * sign-in or a call). Absent: only the file sets it (the store, the trust roots, the board, the
   * broker credentials), and a desired value for it is refused with that reason.
   */
  readonly remote?: "live" | "idle";
  /** Type-level only: whether the typed value is always present. */
  readonly _always?: Always;
}

/** The same option, settable over MQTT (see Option.remote). */
function remote<T, A extends boolean>(o: Option<T, A>, mode: "live" | "idle"): Option<T, A> {
  return { ...o, remote: mode };
}

/** An mqtt:// or mqtts:// broker URL with a host (MQTT over TCP or TLS; no WebSocket). */
const brokerUrl: Kind<string> = {
  type: "mqtt(s) URL",
  check: (v) => {
    try {
      const u = new URL(String(v));
      if (typeof v === "string" && (u.protocol === "mqtt:" || u.protocol === "mqtts:") && u.hostname !== "")
        return v;
    } catch {
      // not a URL at all
    }
    return new KindMismatch(`expected an mqtt:// or mqtts:// URL, got ${JSON.stringify(v)}`);
  },
  toJson: (v) => v,
};

/** The fleet commands (firmware/telemetry/commands.ts names the same set). */
export const FLEET_COMMANDS = [
  "ping",
  "reboot",
  "sign-out",
  "reprovision",
  "diagnostics",
  "screenshot",
  "update",
] as const;

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
  utcOffsetMinutes: remote(
    withDefault(
      integer({ min: -720, max: 840, unit: "min" }),
      0,
      "Local time offset from UTC for the clock on the display.",
    ),
    "idle",
  ),
  "log.level": remote(
    withDefault(
      oneOf("debug", "info", "warn", "error"),
      "info",
      "The least severe log record written (journald, or --json lines); --verbose is debug.",
    ),
    "live",
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
  "network.staticRegistrars": remote(
    optional(
      listOf(hostPort),
      "Registrars tried after those DHCP and DNS name (and before the one cached in flash), in order.",
    ),
    "idle",
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
  "network.failbackProbeMs": remote(
    optional(
      integer({ min: 1_000, max: 86_400_000, unit: "ms" }),
      "While on a backup registrar, how often to probe the home one (the account's default, 60 s, when unset).",
    ),
    "idle",
  ),
  "media.srtp": withDefault(
    oneOf("required", "optional", "off"),
    "required",
    'Call media encryption, as Lync\'s EncryptionLevel: "required" offers RTP/SAVP and refuses a peer without SRTP (488), "optional" offers RTP/AVP with a=crypto and takes either, "off" plain RTP.',
  ),
  "media.address": optional(
    text({
      pattern: /^\d{1,3}(?:\.\d{1,3}){3}$/,
      type: "IPv4 address",
      what: "an IPv4 address",
    }),
    "The address calls' RTP is received on and named in the SDP (c=). Unset: the first non-loopback IPv4 address of the phone's interfaces when the phone starts.",
  ),
  "mqtt.brokers": optional(
    listOf(brokerUrl, { nonEmpty: true }),
    'The MQTT brokers (cluster members), tried in turn with jittered backoff, e.g. ["mqtts://mqtt1.contoso.com:8883"]. Unset: no fleet connection. Needs mqtt.username + mqtt.passwordFile or mqtt.cert + mqtt.key: never anonymous.',
  ),
  "mqtt.prefix": withDefault(
    text({ pattern: /^[^#+\u0000]+[^/#+\u0000]$/, what: "a topic prefix without wildcards or a trailing /" }),
    "handset/v1",
    "Topic prefix: the phone's topics are PREFIX/DEVICE-ID/state, …/event, …/config/desired, …/cmd/NAME.",
  ),
  "mqtt.deviceId": optional(
    text({ pattern: /^[A-Za-z0-9._-]{1,64}$/, what: "1-64 letters, digits, . _ -" }),
    "The phone's name in topics and the client id; default: the device id in flash (handset store init).",
  ),
  "mqtt.site": optional(
    text({ pattern: /^[A-Za-z0-9._-]{1,64}$/, what: "1-64 letters, digits, . _ -" }),
    "The site whose desired configuration (PREFIX/site/SITE/config/desired) is layered between the organisation's (PREFIX/org/config/desired) and the phone's own.",
  ),
  "mqtt.username": optional(text(), "MQTT user name (with mqtt.passwordFile)."),
  "mqtt.passwordFile": optional(
    text({ type: "path" }),
    "A file holding the MQTT password (first line); the password itself is never in the configuration.",
  ),
  "mqtt.ca": optional(
    text({ type: "path" }),
    "PEM file of the CA the broker's certificate chains to (mqtts); default: trustedRoots.",
  ),
  "mqtt.cert": optional(text({ type: "path" }), "PEM file of a client certificate for the broker (mqtts)."),
  "mqtt.key": optional(text({ type: "path" }), "PEM file of the client certificate's key (0600)."),
  "mqtt.keepaliveS": withDefault(
    integer({ min: 5, max: 600, unit: "s" }),
    30,
    "MQTT keep-alive; the phone drops a connection that has been silent for 1.5 × this, and the broker publishes its last will (state lost) after the same.",
  ),
  "mqtt.commands": withDefault(
    listOf(oneOf(...FLEET_COMMANDS)),
    ["ping", "reboot", "sign-out", "reprovision", "diagnostics", "screenshot"],
    "The commands the phone accepts on PREFIX/DEVICE-ID/cmd/NAME; others are refused (command-disabled). Only the file sets it: an operator cannot enable a command over MQTT. update (off by default) asks the A/B image's root installer for a signed bundle.",
  ),
  "mqtt.outboxSize": withDefault(
    integer({ min: 10, max: 100_000 }),
    1_000,
    "Events kept in flash while the broker is unreachable; beyond it the oldest are dropped (and counted).",
  ),
  "mqtt.outboxRatePerS": withDefault(
    integer({ min: 1, max: 1_000, unit: "/s" }),
    20,
    "How fast a queued backlog is sent after a reconnect, so a site's return does not flood the broker.",
  ),
  "telemetry.intervalS": remote(
    withDefault(
      integer({ min: 10, max: 86_400, unit: "s" }),
      300,
      "How often the retained state is republished (uptime, addresses) when nothing changed.",
    ),
    "live",
  ),
} as const satisfies Record<string, Option<unknown>>;

export type OptionName = keyof typeof OPTIONS;

type ValueOf<O> = O extends Option<infer T, infer Always> ? (Always extends true ? T : T | undefined) : never;

/** The validated configuration, keyed by the options' dotted names. */
export type HandsetConfig = { readonly [K in OptionName]: ValueOf<(typeof OPTIONS)[K]> };

export type { HostPort };
