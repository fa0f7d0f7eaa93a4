/**
 * The ports the phone drives. The composition root binds them to the real discovery, SNTP,
 * store, sign-in and registration code; tests bind them to scripted promises. Every failure is
 * a HandsetError whose `code` the phone maps to a screen (firmware/phone/screens.ts).
 */
import type { Line, LineEvent } from "../accounts/account.ts";
import type { MediaPortFactory } from "../sip/session/media-port.ts";
import type { MissedCallStore } from "./missed-store.ts";

export type { Line, LineEvent };

/** What discovery found (DHCP options 43/120/42, DNS SRV, static config, cache). */
export interface DiscoveryResult {
  certProvUrl?: string;
  registrars: Array<{ host: string; port: number; source: string }>;
  ntpServers: string[];
  timeOffsetS?: number;
}

/** One report from the registration policy (accounts/) as it starts, fails over, recovers. */
export interface RegistrationStatus {
  state: "registering" | "registered" | "limited" | "failed" | "sign-in-required";
  /** "host:port" of the registrar in use or being tried. */
  registrar?: string;
  primary?: boolean;
  error?: { code: string; message: string };
  /**
   * With `state: "failed"`: the policy will retry by itself after this long (the phone only
   * shows it). Absent: the policy has stopped, and the phone restarts register() after its own
   * backoff.
   */
  retryInMs?: number;
}

export interface Identity {
  uri?: string;
  displayName?: string;
  /** A client certificate and key are in flash: skip the PIN and register. */
  hasCredential: boolean;
  /**
   * Every stored generation was damaged (store-damaged): the certificate is lost, the store was
   * started afresh, and only a new sign-in helps. The phone says so instead of "no identity yet".
   */
  damaged?: { code: string; message: string };
}

export interface SignInRequest {
  extension: string;
  pin: string;
  certProvUrl?: string;
}

export interface RegistrationHandle {
  /** Ends the registration (un-REGISTER where possible); no status is reported afterwards. */
  stop(): Promise<void>;
}

export interface PhoneServices {
  /** Finds the servers. Throws HandsetError (e.g. "discovery-failed"). */
  discover(): Promise<DiscoveryResult>;
  /** Sets the clock from the discovered NTP servers. Throws HandsetError "clock-unset". */
  setClock(d: DiscoveryResult): Promise<{ offsetMs: number; source: string }>;
  /** What flash holds about the user. */
  identity(): Promise<Identity>;
  /**
   * PIN sign-in and certificate provisioning, persisted on success. Throws HandsetError with
   * codes invalid-pin, account-locked, pin-auth-disabled, server-unreachable,
   * server-cert-untrusted, clock-invalid, … (firmware/provisioning/errors.ts); a wrong-PIN
   * error may carry `attemptsWarning` (server text about attempts left), which the phone shows.
   */
  signIn(o: SignInRequest): Promise<{ uri: string }>;
  /**
   * Starts the registration policy (failover etc. live behind it) and reports every change until
   * stop(). `onLine` hears the account's line come and go (accounts/account.ts LineEvent): the
   * phone places and takes calls on it.
   */
  register(
    d: DiscoveryResult,
    onStatus: (s: RegistrationStatus) => void,
    onLine?: (e: LineEvent) => void,
  ): RegistrationHandle;
  /**
   * Makes the media port of each call (firmware/platform/call-media.ts at the composition root).
   * Absent: the phone places and takes no calls (a line alone cannot carry audio).
   */
  media?: MediaPortFactory;
  /**
   * Flash for the missed-calls list (missed-store.ts's missedCallFile): restored at start, saved
   * on every change. Absent: the list lives in RAM and a restart forgets it.
   */
  missedCalls?: MissedCallStore;
  /**
   * A new key pair and certificate now (certificate-authenticated, no PIN), kept in flash; the
   * next registration uses it. Throws HandsetError (not-signed-in, server-unreachable, …).
   */
  reprovision(): Promise<{ notAfter: number }>;
  /** Wipes the certificate and key. */
  signOut(): Promise<void>;
  /**
   * Factory reset: flash back to factory state (no certificate, key, sign-in progress or cached
   * servers; new device ids). The phone then starts again from discovery.
   */
  factoryReset(): Promise<void>;
  /**
   * Label/value pairs for the menu's Network info pages (whole values: the screen wraps them):
   * registrar in use and whether it is the backup, IP, MAC, the NTP server used, the certificate.
   */
  networkInfo(): Promise<Array<[label: string, value: string]>>;
  version: string;
}
