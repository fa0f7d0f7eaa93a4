/**
 * The calls of one registered flow: places outgoing calls and turns the core's new INVITEs into
 * incoming Calls. One agent per UserAgentCore; when the flow is replaced (failover), the phone
 * builds a new agent on the new core and the calls of the old one end with "transport".
 *
 * An incoming call is announced to `onIncoming` listeners before anything is sent, so a
 * listener can answer it (auto-answer) or reject it (busy: a call is already up) at once; if it
 * is still untouched afterwards, it rings (180). With no listener the INVITE gets 480.
 */
import { Emitter } from "../../core/emitter.ts";
import type { IncomingInvite } from "../user-agent-core.ts";
import { Call, type CallEvent, type CallOptions, type DialOptions } from "./call.ts";
import type { MediaPortFactory } from "./media-port.ts";

export interface CallAgentOptions extends Omit<CallOptions, "media"> {
  /** Makes the media port of each new call. */
  media: MediaPortFactory;
}

export class CallAgent {
  private readonly live = new Set<Call>();
  private readonly incoming = new Emitter<Call>();
  private readonly off: () => void;

  constructor(private readonly o: CallAgentOptions) {
    this.off = o.core.onInvite((invite) => this.onInvite(invite));
  }

  /** Calls not yet terminated. */
  get calls(): Call[] {
    return [...this.live];
  }

  /**
   * Places a call; `listener` is attached before the INVITE goes out, so it sees every event.
   * `o.referredBy`: the call carries out a REFER (RFC 3892's Referred-By on the INVITE).
   */
  dial(target: string, listener?: (e: CallEvent, call: Call) => void, o: DialOptions = {}): Call {
    const call = this.track(new Call({ ...this.o, media: this.o.media() }, "outgoing"));
    if (listener) call.on((e) => listener(e, call));
    call.dial(target, o);
    return call;
  }

  onIncoming(listener: (call: Call) => void): () => void {
    return this.incoming.on(listener);
  }

  /** Stops taking calls and hangs up the ones in progress: the flow is going (Call.hangUp `now`). */
  stop(): void {
    this.off();
    for (const c of [...this.live]) c.hangUp({ now: true });
  }

  private onInvite(invite: IncomingInvite): void {
    if (this.incoming.size === 0) {
      invite.respond(480);
      return;
    }
    const call = this.track(Call.incoming({ ...this.o, media: this.o.media() }, invite));
    this.incoming.emit(call);
    if (call.state === "incoming") call.ring();
  }

  private track(call: Call): Call {
    this.live.add(call);
    call.on((e) => {
      if (e.type === "state" && e.state === "terminated") this.live.delete(call);
    });
    return call;
  }
}
