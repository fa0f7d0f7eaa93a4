/**
 * An https.Agent that checks the server at the phone's time before a request gets the socket,
 * for every HTTPS edge (provisioning's https-client.ts, the update download). OpenSSL can only
 * judge validity at the OS clock, which on a Pi without an RTC is anything: createConnection
 * connects with rejectUnauthorized off, runs checkPeerAtClock on secureConnect (chain, purpose,
 * name and validity at clock.now(), then OpenSSL's verdict apart from time) and only then hands
 * the socket over (Agent.createSocket accepts the callback form), so no request byte reaches a
 * server that has not passed. Sessions are never resumed: every connection is checked in full.
 * What a failure is called is the caller's: each edge has its own error codes.
 */
import * as https from "node:https";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import type { CertClock } from "../sip/tls-dsk/cert-verify.ts";
import { checkPeerAtClock } from "./tls-flow.ts";

export type PeerProblem = NonNullable<ReturnType<typeof checkPeerAtClock>>;

export interface ClockCheckedAgentOptions {
  agent: https.AgentOptions;
  /** Trusted roots (PEM). */
  ca: string[];
  clock: CertClock;
  handshakeTimeoutMs: number;
  /** The caller's errors: a socket error, no handshake in time, a peer that did not pass. */
  errors: {
    transport(err: Error & { code?: string }, name: string): Error;
    timeout(name: string): Error;
    peer(problem: PeerProblem, name: string): Error;
  };
}

export class ClockCheckedAgent extends https.Agent {
  private readonly o: ClockCheckedAgentOptions;

  constructor(o: ClockCheckedAgentOptions) {
    super(o.agent);
    this.o = o;
  }

  override createConnection(
    options: https.RequestOptions,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    const { ca, clock, errors } = this.o;
    const name = options.servername || options.host || "localhost";
    const socket = tls.connect({
      ...(options as tls.ConnectionOptions),
      ca,
      rejectUnauthorized: false,
      session: undefined,
    });
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      socket.setTimeout(0);
      socket.off("error", onError);
      if (err) socket.destroy();
      callback?.(err, socket);
    };
    const onError = (err: Error) => finish(errors.transport(err, name));
    socket.once("error", onError);
    socket.setTimeout(this.o.handshakeTimeoutMs, () => finish(errors.timeout(name)));
    socket.once("secureConnect", () => {
      const p = checkPeerAtClock(socket, { ca, clock, name });
      finish(p ? errors.peer(p, name) : null);
    });
    return undefined;
  }
}
