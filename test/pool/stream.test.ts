// A 100 MB result streams through the pooler with backpressure: while the client does not read, the
// pooler stops reading the origin, so the process's memory does not grow with the result.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { encodeQuery, encodeStartup } from "../../src/protocol/frontend.ts";
import { createScanner } from "../../src/protocol/scan.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let f: PoolerFixture;
beforeAll(async () => {
  f = await startPoolerFixture({ pgAuth: "trust", poolSize: 2 });
}, 60_000);
afterAll(async () => {
  await f.stop();
}, 60_000);

const MiB = 1024 * 1024;
const rss = () => {
  Bun.gc(true);
  return process.memoryUsage().rss;
};

test("100 MB result with a slow reader: memory stays bounded, every byte arrives", async () => {
  const ROWS = 100_000; // 100,000 rows of 1,000 bytes
  let received = 0;
  let rows = 0;
  let ready = 0;
  let wake = () => {};
  const need = new Uint8Array(256);
  const scanner = createScanner(need);
  const sink = {
    forward: (b: Uint8Array) => void (received += b.length),
    message(type: number) {
      if (type === 0x44) rows++;
      if (type === 0x5a) ready++;
      return true;
    },
  };
  const socket: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port: f.pooler.port,
    socket: {
      data(_s, d) {
        scanner.feed(d, sink);
        wake();
      },
    },
  });
  socket.write(encodeStartup({ user: f.pg.user, database: "postgres" }));
  while (ready < 1) await new Promise<void>((r) => (wake = r));
  const before = rss();
  socket.write(encodeQuery(`select repeat('x', 1000) as v from generate_series(1, ${ROWS})`));
  // Read a little, then stop reading for a while: the origin keeps producing, the pooler must not buffer it.
  while (received < 2 * MiB) await new Promise<void>((r) => (wake = r));
  socket.pause();
  await Bun.sleep(1500);
  const paused = rss();
  const receivedWhilePaused = received;
  socket.resume();
  while (ready < 2) await new Promise<void>((r) => (wake = r));
  const after = rss();
  socket.end();
  expect(rows).toBe(ROWS);
  expect(received).toBeGreaterThan(100_000_000);
  console.log(`rss growth: paused ${((paused - before) / MiB).toFixed(1)} MiB, after ${((after - before) / MiB).toFixed(1)} MiB; received while paused ${(receivedWhilePaused / MiB).toFixed(1)} MiB`);
  // Less than a fifth of the result may sit in memory at any point (socket buffers and one chunk each way).
  expect(paused - before).toBeLessThan(20 * MiB);
  expect(after - before).toBeLessThan(20 * MiB);
  expect(receivedWhilePaused).toBeLessThan(50 * MiB);
}, 60_000);
