// The benchmark relay (bench/lib/relay.ts) must deliver every byte intact and in order, with and without
// delay and jitter, in both directions. No timing assertions: speed belongs to the benchmarks.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import type { TCPSocketListener } from "bun";
import { startRelay } from "../bench/lib/relay.ts";

// An echo server that also hashes what it received, so both directions are checked.
let echo: TCPSocketListener<undefined>;
beforeAll(() => {
  echo = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(s, d) {
        // Echo back; what does not fit now is retried on drain via a per-socket queue.
        const q = ((s as unknown as { q?: Uint8Array[] }).q ??= []);
        q.push(d.slice());
        flush(s, q);
      },
      drain(s) {
        flush(s, (s as unknown as { q?: Uint8Array[] }).q ?? []);
      },
    },
  });
});
afterAll(() => echo.stop(true));

function flush(s: { write(b: Uint8Array): number }, q: Uint8Array[]) {
  while (q.length) {
    const n = s.write(q[0]!);
    if (n < q[0]!.byteLength) {
      q[0] = q[0]!.subarray(Math.max(0, n));
      return;
    }
    q.shift();
  }
}

/** Sends `payload` in uneven chunks through the relay and resolves with everything echoed back. */
async function roundTrip(port: number, payload: Uint8Array): Promise<Uint8Array> {
  const got: Uint8Array[] = [];
  let total = 0;
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  const pending: Uint8Array[] = [];
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(s, d) {
        got.push(d.slice());
        total += d.byteLength;
        if (total >= payload.byteLength) {
          s.end();
          resolve(Buffer.concat(got));
        }
      },
      drain(s) {
        flush(s, pending);
      },
      error: (_s, e) => reject(e),
      close: () => (total < payload.byteLength ? reject(new Error(`closed after ${total} of ${payload.byteLength} bytes`)) : undefined),
    },
  });
  for (let off = 0, i = 0; off < payload.byteLength; i++) {
    const size = [1, 7, 300, 4096, 65536][i % 5]!;
    pending.push(payload.subarray(off, off + size));
    off += size;
    flush(sock, pending);
    if (i % 16 === 0) await Bun.sleep(0);
  }
  return promise;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

test("bytes arrive intact and in order with no delay", async () => {
  const relay = await startRelay({ targetHost: "127.0.0.1", targetPort: echo.port });
  try {
    const payload = randomBytes(3 * 1024 * 1024);
    const back = await roundTrip(relay.port, payload);
    expect(back.byteLength).toBe(payload.byteLength);
    expect(sha(back)).toBe(sha(payload));
    expect(relay.stats().bytesUp).toBe(payload.byteLength);
    expect(relay.stats().bytesDown).toBe(payload.byteLength);
  } finally {
    await relay.stop();
  }
});

test("bytes arrive intact and in order with delay, jitter and a simulated handshake, over concurrent connections", async () => {
  const relay = await startRelay({ targetHost: "127.0.0.1", targetPort: echo.port, delayMs: 3, jitterMs: 3, simulateHandshake: true });
  try {
    const payloads = Array.from({ length: 4 }, (_, i) => randomBytes(256 * 1024 + i * 977));
    const backs = await Promise.all(payloads.map((p) => roundTrip(relay.port, p)));
    backs.forEach((b, i) => expect(sha(b)).toBe(sha(payloads[i]!)));
    expect(relay.stats().connections).toBe(4);
  } finally {
    await relay.stop();
  }
});

test("setDelay changes the delay of a live relay without losing bytes; bad values are refused", async () => {
  const relay = await startRelay({ targetHost: "127.0.0.1", targetPort: echo.port });
  try {
    const a = randomBytes(100_000);
    expect(sha(await roundTrip(relay.port, a))).toBe(sha(a));
    relay.setDelay(2, 1);
    const b = randomBytes(100_000);
    expect(sha(await roundTrip(relay.port, b))).toBe(sha(b));
    expect(() => relay.setDelay(-1)).toThrow(/delayMs/);
  } finally {
    await relay.stop();
  }
});

test("a relay to a closed port closes the client instead of hanging", async () => {
  const dead = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = dead.port;
  dead.stop(true);
  const relay = await startRelay({ targetHost: "127.0.0.1", targetPort: port });
  try {
    const closed = Promise.withResolvers<void>();
    await Bun.connect({ hostname: "127.0.0.1", port: relay.port, socket: { data() {}, close: () => closed.resolve(), error: () => closed.resolve() } });
    await closed.promise;
    expect(relay.stats().open).toBe(0);
  } finally {
    await relay.stop();
  }
});
