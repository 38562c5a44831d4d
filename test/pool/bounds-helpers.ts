// Helpers of the resource tests: a pooler child process whose RSS can be read, and a raw client that logs in
// with trust authentication and can write without reading.
import type { Socket, Subprocess } from "bun";
import fs from "node:fs";
import path from "node:path";
import { createFrames } from "../../src/protocol/frames.ts";
import { encodeStartup } from "../../src/protocol/frontend.ts";
import type { Config } from "../../src/config.ts";

export interface ChildPooler {
  port: number;
  pid: number;
  /** Resident set size of the pooler process, in bytes. */
  rss(): number;
  /** Its RSS after a full garbage collection in it: what it retains. */
  retained(): Promise<number>;
  stop(): Promise<void>;
}

export async function startChildPooler(originUrl: string, overrides: Partial<Config>): Promise<ChildPooler> {
  const proc: Subprocess<"ignore", "pipe", "inherit"> = Bun.spawn([process.execPath, path.join(import.meta.dir, "bounds-server.ts"), originUrl, JSON.stringify(overrides)], { stdout: "pipe", stderr: "inherit", stdin: "ignore" });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!/port (\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`pooler child exited: ${text}`);
    text += new TextDecoder().decode(value);
  }
  let gcs = 0;
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      gcs += (new TextDecoder().decode(value).match(/^gc$/gm) ?? []).length;
    }
  })();
  const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${proc.pid}/status`, "utf8"))![1]) * 1024;
  return {
    port: Number(/port (\d+)/.exec(text)![1]),
    pid: proc.pid,
    rss,
    async retained() {
      const want = gcs + 1;
      proc.kill("SIGUSR2");
      await until(() => gcs >= want, "the pooler's garbage collection");
      return rss();
    },
    async stop() {
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(5000)]);
      if (proc.exitCode === null) proc.kill("SIGKILL");
    },
  };
}

export interface FloodConn {
  /** Queues bytes; they go out as fast as the server takes them (the client never blocks). */
  write(b: Uint8Array): void;
  /** Bytes queued here that the server has not taken yet. */
  unsent(): number;
  /** Starts or stops reading (a paused client lets its receive buffer fill). */
  reading(on: boolean): void;
  /** Counts messages by type received so far, in order checks done by `onMessage`. */
  onMessage(f: (type: number, body: Uint8Array) => void): void;
  closed(): boolean;
  end(): void;
}

/** A raw client: `first` (a StartupMessage for user/database), then whatever the test writes. */
export async function floodConnect(port: number, user: string, database = "postgres", first: Uint8Array = encodeStartup({ user, database })): Promise<FloodConn> {
  const pending: Uint8Array[] = [];
  let unsent = 0;
  let closed = false;
  let handler: (type: number, body: Uint8Array) => void = () => {};
  const frames = createFrames(1 << 30);
  const pump = (s: Socket<undefined>) => {
    while (pending.length) {
      const b = pending[0]!;
      const n = s.write(b);
      if (n <= 0) return;
      unsent -= n;
      if (n < b.length) {
        pending[0] = b.subarray(n);
        return;
      }
      pending.shift();
    }
  };
  const socket: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        frames.push(d, (type, body) => void handler(type, body));
      },
      drain: (s) => pump(s),
      close() {
        closed = true;
      },
      error() {
        closed = true;
      },
    },
  });
  const conn: FloodConn = {
    write(b) {
      pending.push(b);
      unsent += b.length;
      if (pending.length === 1) pump(socket);
    },
    unsent: () => unsent,
    reading: (on) => (on ? socket.resume() : socket.pause()),
    onMessage(f) {
      handler = f;
    },
    closed: () => closed,
    end: () => socket.end(),
  };
  conn.write(first);
  return conn;
}

/** Waits until `f` holds, polling; throws with `what` after timeoutMs. */
export async function until(f: () => boolean, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}
