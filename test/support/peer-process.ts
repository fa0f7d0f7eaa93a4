/**
 * A third-party program a test runs as a peer (mosquitto and its clients, baresip): whether it is
 * installed, a free port for it, the process itself (killed if this process dies first), waiting
 * on what it prints, and stopping it without ever letting a test hang on it.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { createServer } from "node:net";

/** Skips the test without the peer (a plain reason); under CI=true throws instead, so the run fails. */
export function needPeer(ctx: { skip: (note?: string) => never }, installed: boolean, missing: string): void {
  if (installed) return;
  if (process.env.CI === "true") throw new Error(missing);
  ctx.skip(missing);
}

/** A loopback TCP port nothing listens on at this moment. */
export async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** A test that dies mid-way must not leave peers behind (they would hold ports). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const p of live) p.kill("SIGKILL");
  });
}

export interface PeerProcess {
  child: ChildProcess;
  /** Resolves with the exit code (null after a signal) once the process has exited. */
  exited: Promise<number | null>;
  hasExited(): boolean;
}

/**
 * spawn(), and the child SIGKILLed if this process exits while it still runs. The exit is seen
 * here before any "exit" listener the caller adds, so hasExited() is already true in those.
 */
export function spawnPeer(command: string, args: string[], options: SpawnOptions): PeerProcess {
  installExitHook();
  const child = spawn(command, args, options);
  live.add(child);
  let hasExited = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => {
      hasExited = true;
      live.delete(child);
      resolve(code);
    });
  });
  return { child, exited, hasExited: () => hasExited };
}

/** SIGTERM, SIGKILL after hardMs (a peer stuck mid-connect may ignore SIGTERM); resolves once it has exited. */
export async function stopPeer(peer: PeerProcess, hardMs = 3_000): Promise<void> {
  if (peer.hasExited()) return;
  peer.child.kill("SIGTERM");
  const hard = setTimeout(() => {
    if (!peer.hasExited()) peer.child.kill("SIGKILL");
  }, hardMs);
  await peer.exited;
  clearTimeout(hard);
}

/**
 * Resolves with what `test` returns once that is not undefined; rejects with what it throws.
 * `test` runs at once and again each time a function in `waiters` is called (the caller calls
 * them all on new output and on the peer's exit). With `timeout`, rejects with its error after
 * its ms.
 */
export function waitOn<T>(
  waiters: Set<() => void>,
  test: () => T | undefined,
  timeout?: { ms: number; error: () => Error },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer =
      timeout === undefined
        ? undefined
        : setTimeout(() => {
            done();
            reject(timeout.error());
          }, timeout.ms);
    const done = () => {
      clearTimeout(timer);
      waiters.delete(check);
    };
    const check = () => {
      let value: T | undefined;
      try {
        value = test();
      } catch (err) {
        done();
        reject(err);
        return;
      }
      if (value !== undefined) {
        done();
        resolve(value);
      }
    };
    waiters.add(check);
    check();
  });
}
