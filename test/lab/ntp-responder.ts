/**
 * The lab's NTP server: answers mode-3 requests with mode 4, echoing the client's transmit
 * timestamp as originate, with receive/transmit = system time + offsetMs. With `kissCode` it
 * answers every request with a Kiss-o'-Death (stratum 0, the code as reference id). While
 * `silent` (the control endpoint's POST /ntp/stop) it answers nothing, as an unreachable server.
 */
import { createSocket } from "node:dgram";

export interface NtpResponderOptions {
  port?: number;
  host?: string;
  /** Added to the system clock in every timestamp the server sends (ms). */
  offsetMs?: number;
  /** Default 2. */
  stratum?: number;
  /** e.g. "RATE", "DENY": answer with a Kiss-o'-Death instead. */
  kissCode?: string;
}

export interface NtpResponder {
  address: string;
  answered(): number;
  /** True: requests are dropped unanswered (the socket stays bound, the address stays the same). */
  silent: boolean;
  stop(): Promise<void>;
}

const NTP_UNIX_OFFSET_S = 2_208_988_800;

function writeTimestamp(b: Buffer, at: number, unixMs: number): void {
  const s = Math.floor(unixMs / 1000);
  const frac = Math.floor(((unixMs - s * 1000) / 1000) * 2 ** 32);
  b.writeUInt32BE((s + NTP_UNIX_OFFSET_S) % 2 ** 32, at);
  b.writeUInt32BE(Math.min(frac, 2 ** 32 - 1), at + 4);
}

export async function startNtpResponder(o: NtpResponderOptions = {}): Promise<NtpResponder> {
  const host = o.host ?? "127.0.0.1";
  const socket = createSocket("udp4");
  let answered = 0;
  const now = () => performance.timeOrigin + performance.now() + (o.offsetMs ?? 0);
  const responder = { silent: false };
  socket.on("message", (msg, rinfo) => {
    if (responder.silent) return;
    const received = now();
    if (msg.length < 48 || (msg[0]! & 7) !== 3) return;
    const version = (msg[0]! >> 3) & 7;
    const reply = Buffer.alloc(48);
    reply[0] = (0 << 6) | (version << 3) | 4;
    msg.copy(reply, 24, 40, 48); // originate = client's transmit
    if (o.kissCode) {
      reply[1] = 0;
      Buffer.from(o.kissCode.padEnd(4, "\0").slice(0, 4), "latin1").copy(reply, 12);
    } else {
      reply[1] = o.stratum ?? 2;
      reply[2] = 6;
      reply[3] = 0xec; // precision ≈ 2^-20 s
      Buffer.from([127, 0, 0, 1]).copy(reply, 12);
      writeTimestamp(reply, 16, received - 1000);
      writeTimestamp(reply, 32, received);
      writeTimestamp(reply, 40, now());
    }
    answered++;
    socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(o.port ?? 0, host, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  return Object.assign(responder, {
    address: `${host}:${socket.address().port}`,
    answered: () => answered,
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  });
}
