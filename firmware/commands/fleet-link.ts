/**
 * Binds the fleet agent (firmware/telemetry/fleet-agent.ts) to a running phone: the phone's
 * events become fleet events and retained state, the fleet's commands become phone operations,
 * and desired configuration is applied live (log level, telemetry interval) or at the next idle
 * moment by restarting the phone core with it (registrars, fail-back probe, display offset).
 * Composition only: the protocol is in telemetry/, the socket in platform/.
 *
 * The agent outlives the phone core: a restart for an idle-applied configuration keeps one MQTT
 * session, and the applied values are kept in flash (fleet-config.json) so a reboot starts with
 * them instead of restarting once more when the retained desired document arrives again.
 */
import type { Clock } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger, LogLevel } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { Phone, PhoneEvent } from "../phone/phone.ts";
import { nodeFileSystem } from "../platform/file-system.ts";
import { createMqttPort } from "../platform/mqtt-connection.ts";
import type { CertClock } from "../sip/tls-dsk/cert-verify.ts";
import type { FileSystem } from "../store/file-system.ts";
import { jsonFile } from "../store/json-file.ts";
import type { Diagnostics } from "../telemetry/diagnostics.ts";
import {
  type DeviceState,
  FleetAgent,
  type FleetDevice,
  type FleetSettings,
  type FleetStatus,
} from "../telemetry/fleet-agent.ts";
import type { MqttPort } from "../telemetry/mqtt-port.ts";
import type { OutboxSnapshot } from "../telemetry/outbox.ts";
import type { RecentLog } from "../telemetry/recent-log.ts";
import type { FleetUpdates } from "./fleet-update.ts";

/** What the link needs of the phone core now running (it changes when the core restarts). */
export interface FleetCore {
  phone: Phone;
  services: { diagnostics(): Promise<Diagnostics> };
}

/** The applied remote configuration kept in flash: dotted key → value. */
export interface FleetOverlay {
  values: Record<string, unknown>;
}

const isOverlay = (v: unknown): v is FleetOverlay =>
  typeof v === "object" && v !== null && typeof (v as FleetOverlay).values === "object";

export const OVERLAY_FILE = "fleet-config.json";
export const OUTBOX_FILE = "fleet-outbox.json";

export interface FleetLinkOptions {
  settings: FleetSettings;
  storeDir: string;
  clock: Clock;
  random: Random;
  logger: Logger;
  version: string;
  core(): FleetCore | undefined;
  /** The display's last frame (the `screenshot` command). */
  screen(): string[];
  recentLog?: RecentLog;
  /** The firmware slot running ("a" / "b"), on an A/B image. */
  slot?: string;
  /** The live log level switch (`log.level`). */
  setLogLevel?(level: LogLevel): void;
  /** Restarts the phone core with the overlay's idle values applied (registrars, …). */
  restartCore(overlay: FleetOverlay, reason: string): Promise<void>;
  /** A reboot: under systemd the process exits and is restarted; elsewhere the core restarts. */
  reboot(): void;
  /** The `update` command, on an A/B image (fleet-update.ts); absent: update-unavailable. */
  updates?: FleetUpdates;
  port?: MqttPort;
  fs?: FileSystem;
  /** What broker certificates are checked against (default `clock`: pass the ClockService). */
  certClock?: CertClock;
}

export interface FleetLink {
  agent: FleetAgent;
  /** Feed every phone event here (state, error, display). */
  onPhoneEvent(e: PhoneEvent): void;
  /** A certificate lifecycle event (renewed, revoked, …). */
  onCertificate(e: { type: string }): void;
  status(): FleetStatus | undefined;
  stop(o?: { clean?: boolean }): Promise<void>;
}

/** Loads the applied overlay (an unreadable file is no overlay: the file's config then holds). */
export async function loadFleetOverlay(
  storeDir: string,
  logger: Logger,
  fs: FileSystem = nodeFileSystem,
): Promise<FleetOverlay> {
  const file = jsonFile<FleetOverlay>(fs, storeDir, OVERLAY_FILE, {
    check: isOverlay,
    onDamaged: (reason) => logger.warn("fleet configuration in flash ignored", { reason }),
  });
  try {
    return (await file.load()) ?? { values: {} };
  } catch (err) {
    logger.warn("fleet configuration unreadable", { code: (err as HandsetError).code ?? "io" });
    return { values: {} };
  }
}

const HISTORY = 50;

export async function startFleetLink(o: FleetLinkOptions): Promise<FleetLink> {
  const fs = o.fs ?? nodeFileSystem;
  const log = o.logger.child("fleet");
  const started = o.clock.monotonic();
  const overlayFile = jsonFile<FleetOverlay>(fs, o.storeDir, OVERLAY_FILE, { check: isOverlay });
  const outboxFile = jsonFile<OutboxSnapshot>(fs, o.storeDir, OUTBOX_FILE, {
    check: (v): v is OutboxSnapshot => typeof v === "object" && v !== null,
    onDamaged: (reason) => log.warn("fleet outbox in flash ignored", { reason }),
  });
  let overlay = await loadFleetOverlay(o.storeDir, log, fs);
  let diag: Diagnostics | undefined;
  let last: { state: string; registrar?: string; primary?: boolean } | undefined;
  const history: Array<{
    at: string;
    state: string;
    registrar?: string;
    primary?: boolean;
    reason?: string;
  }> = [];
  let status: FleetStatus | undefined;
  /** The call up now, from the phone's call events (the retained state's `call`). */
  let call: DeviceState["call"];

  /**
   * A call event of the phone: the state's `call` follows it, and the event stream gets
   * call.started (the first event of a call), call.transferring, call.ended (with the reason and
   * duration) and call.missed. Numbers only (the user part of the URI), never display names.
   */
  const onCall = (e: Extract<PhoneEvent, { event: "call" }>) => {
    const remote = e.remote ?? "";
    switch (e.state) {
      case "idle":
        return;
      case "missed":
        agent.event("call.missed", { remote, busy: e.reason === "busy" });
        return;
      case "ended":
        agent.event("call.ended", {
          direction: e.direction ?? call?.direction,
          remote,
          reason: e.reason,
          status: e.status,
          durationS: Math.round((e.durationMs ?? 0) / 1000),
        });
        call = undefined;
        agent.stateChanged();
        return;
      default: {
        const direction = e.direction ?? call?.direction ?? "outgoing";
        if (!call) {
          call = { state: e.state, direction, remote, since: o.clock.now() };
          agent.event("call.started", { direction, remote });
        }
        if (e.state === "transferring" && call.state !== "transferring")
          agent.event("call.transferring", { remote, to: e.to });
        call.state = e.state;
        call.remote = remote;
        agent.stateChanged();
      }
    }
  };

  const refreshDiagnostics = () => {
    const core = o.core();
    if (!core) return;
    core.services
      .diagnostics()
      .then((d) => {
        diag = d;
        agent.stateChanged();
      })
      .catch((err: unknown) =>
        log.warn("diagnostics failed", { code: (err as HandsetError).code ?? "internal" }),
      );
  };

  const deviceState = (): DeviceState => {
    const cert = diag?.certificate;
    const notAfter = cert ? Date.parse(cert.notAfter) : Number.NaN;
    return {
      state: last?.state ?? "booting",
      ...(last?.registrar ? { registrar: last.registrar } : {}),
      ...(last?.primary !== undefined ? { primary: last.primary } : {}),
      limited: last?.state === "limited",
      ...(diag?.user ? { uri: diag.user } : {}),
      ...(cert && Number.isFinite(notAfter) ? { certificate: { notAfter, subject: cert.subject } } : {}),
      firmware: { version: o.version, ...(o.slot ? { slot: o.slot } : {}) },
      uptimeS: Math.floor((o.clock.monotonic() - started) / 1000),
      addresses: {
        ...(diag?.network.ip ? { ip: diag.network.ip } : {}),
        ...(diag?.network.mac ? { mac: diag.network.mac } : {}),
      },
      ...(call ? { call: { ...call } } : {}),
    };
  };

  const needCore = (): FleetCore => {
    const core = o.core();
    if (!core) throw new HandsetError("not-running", "The phone core is restarting; try again");
    return core;
  };

  const device: FleetDevice = {
    state: deviceState,
    isIdle: () => o.core()?.phone.isIdle() ?? false,
    async run(name, args) {
      switch (name) {
        case "reboot":
          // Answer first: the reply goes out before the phone goes away.
          o.clock.setTimer(1_000, () => o.reboot());
          return { rebooting: true };
        case "sign-out":
          await needCore().phone.requestSignOut();
          return { signedOut: true };
        case "reprovision": {
          const r = await needCore().phone.requestReprovision();
          return { certificate: { notAfter: new Date(r.notAfter).toISOString() } };
        }
        case "diagnostics": {
          const d = await needCore().services.diagnostics();
          return {
            diagnostics: d,
            registrationHistory: history.slice(),
            log: (o.recentLog?.recent(100) ?? []).map((l) => ({ ...l, at: new Date(l.at).toISOString() })),
          };
        }
        case "screenshot":
          return { lines: o.screen() };
        case "update": {
          if (!o.updates)
            throw new HandsetError(
              "update-unavailable",
              "Not an A/B image: updates are installed by `handset update` on the phone's image only",
            );
          // Requested, not installed: the root installer reports through update.result and the
          // state's firmware version and slot after the trial boot.
          return { requested: true, ...(await o.updates.request(args)) };
        }
        default:
          throw new HandsetError("unknown-command", `No command ${name}`);
      }
    },
    async applyConfig(values, mode) {
      if (mode === "live") {
        for (const [k, v] of Object.entries(values)) {
          if (k === "log.level") o.setLogLevel?.((v as LogLevel | undefined) ?? "warn");
          else if (k === "telemetry.intervalS")
            agent.updateSettings({ intervalS: (v as number | undefined) ?? o.settings.intervalS });
        }
        return;
      }
      const next: Record<string, unknown> = { ...overlay.values };
      let changed = false;
      for (const [k, v] of Object.entries(values)) {
        if (JSON.stringify(next[k]) === JSON.stringify(v)) continue;
        changed = true;
        if (v === undefined) delete next[k];
        else next[k] = v;
      }
      if (!changed) return;
      overlay = { values: next };
      try {
        await overlayFile.save(overlay);
      } catch (err) {
        // Still applied now; only a reboot would forget it (and the retained document restores it).
        log.error("fleet configuration not saved", { code: (err as HandsetError).code ?? "io" });
      }
      await o.restartCore(overlay, "config");
    },
  };

  const agent = new FleetAgent({
    clock: o.clock,
    random: o.random,
    logger: o.logger, // the agent logs as "fleet" itself
    // The broker's certificate is checked at the phone's clock (SNTP-corrected), as every other one.
    port: o.port ?? createMqttPort({ logger: log, clock: o.certClock ?? o.clock }),
    settings: o.settings,
    device,
    store: { load: () => outboxFile.load(), save: (s) => outboxFile.save(s) },
  });
  // What the root installer said about the last update this phone asked for (after its trial
  // boot, or at once when it failed): one event, then the file is gone.
  o.updates
    ?.takeResult()
    .then((r) => {
      if (!r) return;
      agent.event("update.result", {
        id: r.id,
        ok: r.ok,
        ...(r.version ? { version: r.version } : {}),
        ...(r.slot ? { slot: r.slot } : {}),
        ...(r.code ? { code: r.code } : {}),
      });
    })
    .catch((err: unknown) =>
      log.warn("update result unreadable", { code: (err as HandsetError).code ?? "io" }),
    );
  agent.status.on((s) => {
    status = s;
  });
  await agent.start();

  return {
    agent,
    onPhoneEvent(e) {
      if (e.event === "error") {
        agent.event("error", { code: e.code });
        return;
      }
      if (e.event === "call") {
        onCall(e);
        return;
      }
      if (e.event !== "state") return;
      const prev = last;
      last = {
        state: e.state,
        ...(e.registrar ? { registrar: e.registrar } : {}),
        ...(e.primary !== undefined ? { primary: e.primary } : {}),
      };
      history.push({
        at: new Date(o.clock.now()).toISOString(),
        state: e.state,
        ...(e.registrar ? { registrar: e.registrar } : {}),
        ...(e.primary !== undefined ? { primary: e.primary } : {}),
        ...(e.reason ? { reason: e.reason } : {}),
      });
      if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
      agent.event("state", {
        from: prev?.state,
        to: e.state,
        registrar: e.registrar,
        primary: e.primary,
        reason: e.reason,
      });
      const up = (s?: string) => s === "registered" || s === "limited";
      if (up(e.state) && up(prev?.state) && e.registrar !== prev?.registrar && e.primary !== undefined)
        agent.event(e.primary ? "failback" : "failover", { from: prev?.registrar, to: e.registrar });
      else if (up(e.state) && e.primary === false && !up(prev?.state))
        agent.event("failover", { to: e.registrar });
      if (prev?.state === "signing-in")
        agent.event("sign-in", {
          result: e.state === "provisioned" ? "ok" : "failed",
          ...(e.state !== "provisioned" && e.reason ? { code: e.reason } : {}),
        });
      agent.stateChanged();
      agent.idleChanged();
      refreshDiagnostics();
    },
    onCertificate(e) {
      agent.event("certificate", { lifecycle: e.type });
      refreshDiagnostics();
    },
    status: () => status,
    stop: (so) => agent.stop(so),
  };
}
