/**
 * The fleet command table (issue 11 "Authority"): which commands exist, which are disruptive, and
 * how a request on PREFIX/DEVICE/cmd/NAME becomes exactly one reply (or, for a disruptive
 * command while the phone is busy, a "deferred" reply now and the result when it has run).
 *
 * - Only commands in mqtt.commands run; others are refused ("command-disabled", "unknown-command").
 * - Disruptive ones (reboot, sign-out, reprovision, update) wait until the phone is idle (not
 *   signing in, not in a call), in the order they came.
 * - A retained command is ignored: a stale retained "reboot" would reboot the phone on every
 *   connect.
 * - The payload is a JSON object of arguments (empty = {}); anything else is "bad-request".
 */
import type { FLEET_COMMANDS } from "../config/options.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import { type CommandReply, replyPayload } from "./payloads.ts";

export type FleetCommand = (typeof FLEET_COMMANDS)[number];

export interface CommandSpec {
  /** Waits for idle: it ends calls, sign-ins or the running firmware. */
  disruptive: boolean;
}

export const COMMANDS: Readonly<Record<FleetCommand, CommandSpec>> = {
  ping: { disruptive: false },
  reboot: { disruptive: true },
  "sign-out": { disruptive: true },
  reprovision: { disruptive: true },
  update: { disruptive: true },
  diagnostics: { disruptive: false },
  screenshot: { disruptive: false },
};

export interface CommandRequest {
  name: string;
  payload: Uint8Array | string;
  retain: boolean;
  responseTopic?: string;
  correlationData?: Buffer;
}

export interface CommandHost {
  isIdle(): boolean;
  /** Runs a command other than ping on the phone. */
  run(name: string, args: Record<string, unknown>): Promise<unknown>;
  /** ping's answer, from the agent itself. */
  ping(): Record<string, unknown>;
  /** Publishes a reply on the request's response topic. */
  reply(to: { topic: string; correlationData?: Buffer }, payload: string): void;
}

/** Disruptive commands waiting for idle beyond this are refused ("busy"). */
export const MAX_DEFERRED = 16;

interface Pending {
  req: CommandRequest;
  args: Record<string, unknown>;
}

export class CommandTable {
  private enabled: Set<string>;
  private readonly host: CommandHost;
  private readonly log: Logger;
  private readonly deferred: Pending[] = [];
  private draining = false;

  constructor(o: { host: CommandHost; logger: Logger; enabled: readonly string[] }) {
    this.host = o.host;
    this.log = o.logger;
    this.enabled = new Set(o.enabled);
  }

  setEnabled(names: readonly string[]): void {
    this.enabled = new Set(names);
  }

  get deferredCount(): number {
    return this.deferred.length;
  }

  handle(req: CommandRequest): void {
    if (req.retain) {
      this.log.info("retained command ignored", { code: "command-retained", command: req.name.slice(0, 64) });
      return;
    }
    const accepted = this.accept(req);
    if (!accepted) return;
    if (!accepted.spec.disruptive) {
      void this.execute(accepted).catch((err) => this.internal(err));
      return;
    }
    if (!this.idle()) {
      this.log.info("command deferred until idle", { code: "command-deferred", command: req.name });
      this.send(req, { command: req.name, status: "deferred" });
    }
    this.deferred.push(accepted);
    this.idleChanged();
  }

  /** The request with its spec and arguments, or undefined once it has been refused. */
  private accept(req: CommandRequest): (Pending & { spec: CommandSpec }) | undefined {
    const spec = Object.hasOwn(COMMANDS, req.name) ? COMMANDS[req.name as FleetCommand] : undefined;
    const args = parseArgs(req.payload);
    let code: string;
    let message: string;
    if (!spec) [code, message] = ["unknown-command", "no such command"];
    else if (!this.enabled.has(req.name)) [code, message] = ["command-disabled", "this command is disabled"];
    else if (!args) [code, message] = ["bad-request", "the payload must be a JSON object (or empty)"];
    else if (spec.disruptive && this.deferred.length >= MAX_DEFERRED)
      [code, message] = ["busy", "too many commands are waiting for the phone to be idle"];
    else return { req, args, spec };
    const command = req.name.slice(0, 64);
    this.log.info("command refused", { code, command });
    this.send(req, { command, status: "refused", error: { code, message } });
    return undefined;
  }

  /** The phone may have become idle: runs the waiting disruptive commands, oldest first. */
  idleChanged(): void {
    if (this.draining || this.deferred.length === 0) return;
    this.draining = true;
    void this.drain()
      .catch((err) => this.internal(err))
      .finally(() => {
        this.draining = false;
        // a command queued while the last one ran
        if (this.deferred.length > 0 && this.idle()) this.idleChanged();
      });
  }

  /** Forgets the waiting commands (the agent stopped). */
  clear(): void {
    this.deferred.length = 0;
  }

  private async drain(): Promise<void> {
    while (this.deferred.length > 0 && this.idle()) await this.execute(this.deferred.shift()!);
  }

  private async execute(p: Pending): Promise<void> {
    const { req, args } = p;
    try {
      const result = req.name === "ping" ? this.host.ping() : await this.host.run(req.name, args);
      this.log.info("command done", { code: "command-ok", command: req.name });
      this.send(req, { command: req.name, status: "ok", ...(result === undefined ? {} : { result }) });
    } catch (err) {
      const error =
        err instanceof HandsetError
          ? { code: err.code, message: err.message }
          : { code: "internal", message: "the command failed" };
      this.log.warn("command failed", { code: error.code, command: req.name });
      this.send(req, { command: req.name, status: "error", error });
    }
  }

  private idle(): boolean {
    try {
      return this.host.isIdle();
    } catch {
      return false; // a device that cannot say is treated as busy: nothing disruptive runs
    }
  }

  private send(req: CommandRequest, reply: CommandReply): void {
    if (!req.responseTopic) {
      this.log.info("reply dropped: the request has no response topic", {
        code: "command-no-response-topic",
        command: reply.command,
        status: reply.status,
      });
      return;
    }
    this.host.reply(
      { topic: req.responseTopic, ...(req.correlationData ? { correlationData: req.correlationData } : {}) },
      replyPayload(reply),
    );
  }

  private internal(err: unknown): void {
    this.log.error("command handling failed", { code: err instanceof HandsetError ? err.code : "internal" });
  }
}

/** Arguments are small; a larger payload is refused rather than parsed. */
export const MAX_ARGS_BYTES = 65_536;

function parseArgs(payload: Uint8Array | string): Record<string, unknown> | undefined {
  if (payload.length > MAX_ARGS_BYTES) return undefined;
  const text = typeof payload === "string" ? payload : Buffer.from(payload).toString("utf8");
  if (text.trim() === "") return {};
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
