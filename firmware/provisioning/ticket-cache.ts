/**
 * The web tickets of unfinished sign-ins, in memory only (never in flash). A file of its own so
 * that the phone can hold the cache from boot without loading the sign-in code (XML, signing,
 * node-forge), which a registered phone does not need until it signs in or renews.
 */
import type { WebTicket } from "./web-ticket.ts";

/** In-memory web tickets of unfinished sign-ins, so that a retry does not send the PIN again. */
export class PinTicketCache {
  private readonly tickets = new Map<string, WebTicket>();

  /** A ticket for this key that is valid for at least another `marginMs`; expired ones are dropped. */
  take(key: string, now: number, marginMs = 60_000): WebTicket | undefined {
    const t = this.tickets.get(key);
    if (!t) return undefined;
    const expires = Date.parse(t.expires);
    if (Number.isNaN(expires) || expires - marginMs <= now) {
      this.tickets.delete(key);
      return undefined;
    }
    return t;
  }

  put(key: string, ticket: WebTicket): void {
    this.tickets.clear(); // one sign-in at a time
    this.tickets.set(key, ticket);
  }

  delete(key: string): void {
    this.tickets.delete(key);
  }

  get size(): number {
    return this.tickets.size;
  }
}
