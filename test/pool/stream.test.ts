// A 100 MB result streams through the pooler with backpressure: while the client does not read, the pooler
// stops reading the origin, so the pooler's memory does not grow with the result. The pooler runs in a process
// of its own (bounds-helpers.ts) so that its RSS, read from /proc after a full collection in it, is its own and
// not that of whatever else `bun test` runs in this process; and the origin shows, from its side, that it is
// blocked on sending while the client does not read.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { SQL } from "bun";
import { encodeQuery, encodeStartup } from "../../src/protocol/frontend.ts";
import { createScanner } from "../../src/protocol/scan.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startChildPooler, type ChildPooler } from "./bounds-helpers.ts";

let origin: TestPostgres;
let pooler: ChildPooler;
beforeAll(async () => {
  origin = await startTestPostgres();
  pooler = await startChildPooler(origin.url, { pgAuth: "trust", poolSize: 2 });
}, 120_000);
afterAll(async () => {
  await pooler?.stop();
  await origin?.destroy();
}, 60_000);

const MiB = 1024 * 1024;

test("100 MB result with a slow reader: memory stays bounded, every byte arrives", async () => {
  const ROWS = 100_000; // 100,000 rows of 1,000 bytes
  const QUERY = `select repeat('x', 1000) as v from generate_series(1, ${ROWS})`;
  let received = 0;
  let rows = 0;
  let ready = 0;
  let wake = () => {};
  const scanner = createScanner(new Uint8Array(256));
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
    port: pooler.port,
    socket: {
      data(_s, d) {
        scanner.feed(d, sink);
        wake();
      },
    },
  });
  const direct = new SQL({ url: origin.url, max: 1 });
  try {
    socket.write(encodeStartup({ user: origin.user, database: "postgres" }));
    while (ready < 1) await new Promise<void>((r) => (wake = r));
    const before = await pooler.retained();
    socket.write(encodeQuery(QUERY));
    // Read a little, then stop reading for a while: the origin keeps producing, the pooler must not buffer it.
    while (received < 2 * MiB) await new Promise<void>((r) => (wake = r));
    socket.pause();
    await Bun.sleep(1500);
    const receivedWhilePaused = received;
    const pausedPeak = pooler.rss();
    const paused = await pooler.retained();
    // The origin's backend for the query is waiting to write to the pooler: the pooler has stopped reading it.
    const [origin_] = await direct`select state, wait_event from pg_stat_activity where query = ${QUERY}`;
    socket.resume();
    while (ready < 2) await new Promise<void>((r) => (wake = r));
    const after = await pooler.retained();
    console.log(
      `pooler rss growth: paused ${((paused - before) / MiB).toFixed(1)} MiB (${((pausedPeak - before) / MiB).toFixed(1)} before its collection), ` +
        `after ${((after - before) / MiB).toFixed(1)} MiB; received while paused ${(receivedWhilePaused / MiB).toFixed(1)} MiB; origin ${JSON.stringify(origin_)}`,
    );
    expect(rows).toBe(ROWS);
    expect(received).toBeGreaterThan(100_000_000);
    expect(origin_).toEqual({ state: "active", wait_event: "ClientWrite" });
    // Less than a fifth of the result may sit in the pooler at any point (socket buffers and one chunk each way).
    expect(paused - before).toBeLessThan(20 * MiB);
    expect(after - before).toBeLessThan(20 * MiB);
    expect(receivedWhilePaused).toBeLessThan(50 * MiB);
  } finally {
    socket.end();
    await direct.close();
  }
}, 60_000);
