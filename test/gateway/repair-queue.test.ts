// The durable repair queue: dedupe, backoff with a manual clock, restart replay, crash safety (a torn line and a
// real SIGKILL), compaction, bounds that hand overflow to the crawler, metrics.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { manualClock } from "../../src/clock.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { backoffDelay, openRepairQueue, type RepairQueueOptions } from "../../src/gateway/repair-queue.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-repair-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(root, `q${n++}`, "repair");
const T0 = 1_800_000_000_000;

function open(dir: string, extra: Partial<RepairQueueOptions> = {}) {
  const clock = manualClock(T0);
  const metrics = createRegistry();
  const q = openRepairQueue({ dir, clock, metrics, random: () => 0.5, ...extra });
  return { q, clock, metrics };
}

test("a key is queued once per backend however often it fails", () => {
  const { q, metrics } = open(freshDir());
  expect(q.enqueue({ backend: "replica", namespace: "ns1", key: "k" })).toBe("queued");
  expect(q.enqueue({ backend: "replica", namespace: "ns1", key: "k" })).toBe("deduplicated");
  expect(q.enqueue({ backend: "replica", namespace: "ns1", key: "k", mechanism: "read" })).toBe("deduplicated");
  expect(q.enqueue({ backend: "primary", namespace: "ns1", key: "k" })).toBe("queued");
  expect(q.enqueue({ backend: "replica", namespace: "ns2", key: "k" })).toBe("queued");
  expect(q.depth()).toBe(3);
  expect(q.depth("replica")).toBe(2);
  const text = metrics.render();
  expect(text).toContain('kvdrive_repair_queue_depth{backend="replica"} 2');
  expect(text).toContain('kvdrive_repair_deduplicated_total{backend="replica"} 2');
  q.close();
});

test("take hands each due task out once; done removes it; metrics count repairs by mechanism", () => {
  const { q, metrics } = open(freshDir());
  q.enqueue({ backend: "replica", namespace: "n", key: "a", mechanism: "read" });
  q.enqueue({ backend: "replica", namespace: "n", key: "b" });
  const first = q.take();
  expect(first.map((t) => t.key).sort()).toEqual(["a", "b"]);
  expect(q.take()).toEqual([]); // in flight
  for (const t of first) q.done(t);
  expect(q.depth()).toBe(0);
  expect(metrics.render()).toContain('kvdrive_repairs_total{backend="replica",mechanism="read"} 1');
  expect(q.take(undefined, 10)).toEqual([]);
  q.close();
});

test("failures back off exponentially with jitter, capped, on the injected clock", () => {
  const { q, clock } = open(freshDir(), { baseDelayMs: 1000, maxDelayMs: 8000, random: () => 0.5 });
  q.enqueue({ backend: "replica", namespace: "n", key: "k" });
  const waits: number[] = [];
  for (let i = 0; i < 6; i++) {
    const [t] = q.take();
    expect(t!.attempts).toBe(i);
    const due = q.failed(t!);
    waits.push(due - clock.now());
    expect(q.take(due - 1)).toEqual([]); // not a millisecond early
    clock.set(due);
  }
  // step 1s, 2s, 4s, 8s, 8s, 8s; equal jitter at random()=0.5 waits 3/4 of the step
  expect(waits).toEqual([750, 1500, 3000, 6000, 6000, 6000]);
  expect(q.take().length).toBe(1);
  q.close();
});

test("jitter stays within half a step and the full step", () => {
  for (let attempt = 1; attempt <= 12; attempt++) {
    const step = Math.min(300_000, 1000 * 2 ** (attempt - 1));
    expect(backoffDelay(attempt, 1000, 300_000, () => 0)).toBe(step / 2);
    expect(backoffDelay(attempt, 1000, 300_000, () => 0.999999)).toBeLessThanOrEqual(step);
    expect(backoffDelay(attempt, 1000, 300_000, () => 0.999999)).toBeGreaterThan(step * 0.99);
  }
});

test("a key enqueued again while its repair is running is repaired again, at once", () => {
  const { q } = open(freshDir());
  q.enqueue({ backend: "replica", namespace: "n", key: "k" });
  const [t] = q.take();
  expect(q.enqueue({ backend: "replica", namespace: "n", key: "k" })).toBe("deduplicated");
  q.done(t!);
  expect(q.depth()).toBe(1);
  const [again] = q.take();
  expect(again!.attempts).toBe(0);
  q.done(again!);
  expect(q.depth()).toBe(0);
  q.close();
});

test("a restart replays the log: queued keys, attempts, due times and in-flight tasks come back", () => {
  const dir = freshDir();
  const { q, clock } = open(dir);
  for (const k of ["a", "b", "c", "d"]) q.enqueue({ backend: "replica", namespace: "n", key: k });
  const taken = q.take(undefined, 3);
  const byKey = new Map(taken.map((t) => [t.key, t]));
  q.done(byKey.get("a")!);
  const due = q.failed(byKey.get("b")!);
  // "c" is in flight when the process stops: it must come back
  q.close();

  const re = open(dir);
  expect(re.q.depth()).toBe(3);
  re.clock.set(clock.now());
  expect(re.q.take().map((t) => t.key).sort()).toEqual(["c", "d"]);
  const [b] = re.q.take(due);
  expect(b).toMatchObject({ key: "b", attempts: 1, dueAt: due });
  re.q.close();
});

test("a torn last line (crash mid-append) is ignored, corrupt lines are counted, and appends go on cleanly", () => {
  const dir = freshDir();
  const { q } = open(dir);
  q.enqueue({ backend: "replica", namespace: "n", key: "kept" });
  q.close();
  const log = path.join(dir, "repair.log");
  fs.appendFileSync(log, '{"o":"q","b":"replica","n":"n","k":"torn","m":"wri');
  const re = open(dir);
  expect(re.q.depth()).toBe(1);
  expect(re.metrics.render()).toContain("kvdrive_repair_log_corrupt_lines_total 1");
  expect(re.q.enqueue({ backend: "replica", namespace: "n", key: "after" })).toBe("queued");
  re.q.close();
  const again = open(dir);
  expect(again.q.take().map((t) => t.key).sort()).toEqual(["after", "kept"]);
  expect(again.metrics.render()).not.toContain("kvdrive_repair_log_corrupt_lines_total 1");
  again.q.close();
});

test("a process killed with SIGKILL right after enqueueing loses nothing it enqueued", async () => {
  const dir = freshDir();
  const script = path.join(root, "crash.ts");
  fs.writeFileSync(script, `
    import { openRepairQueue } from ${JSON.stringify(path.join(import.meta.dir, "../../src/gateway/repair-queue.ts"))};
    const q = openRepairQueue({ dir: ${JSON.stringify(dir)}, clock: { now: () => Date.now() } });
    for (let i = 0; i < 500; i++) q.enqueue({ backend: "replica", namespace: "crash", key: "k" + i });
    const [t] = q.take(undefined, 1);
    q.done(t);
    process.kill(process.pid, "SIGKILL");
  `);
  const child = Bun.spawn([process.execPath, script], { stdout: "ignore", stderr: "pipe" });
  expect(await child.exited).not.toBe(0);
  expect(child.signalCode).toBe("SIGKILL");
  const { q } = open(dir);
  expect(q.depth()).toBe(499);
  q.close();
});

test("the log is compacted when it outgrows what it holds, and the compacted log replays the same", () => {
  const dir = freshDir();
  const { q } = open(dir, { compactAtBytes: 64 * 1024 });
  q.enqueue({ backend: "replica", namespace: "n", key: "survivor" });
  let peak = 0;
  for (let round = 0; round < 40; round++) {
    for (let i = 0; i < 50; i++) q.enqueue({ backend: "replica", namespace: "n", key: `churn-${round}-${i}` });
    for (const t of q.take(undefined, 1000)) if (t.key !== "survivor") q.done(t);
    peak = Math.max(peak, q.logBytes());
  }
  expect(peak).toBeLessThan(64 * 1024 + 8 * 1024);
  expect(q.logBytes()).toBeLessThan(64 * 1024);
  expect(fs.statSync(path.join(dir, "repair.log")).size).toBe(q.logBytes());
  q.close();
  const re = open(dir);
  expect(re.q.depth()).toBe(1);
  expect(re.q.take()[0]!.key).toBe("survivor");
  re.q.close();
});

test("past its bounds the queue stores nothing more, marks the backend for a crawler pass, and counts it", () => {
  const dir = freshDir();
  const { q, metrics } = open(dir, { maxEntries: 3 });
  for (const k of ["a", "b", "c"]) expect(q.enqueue({ backend: "replica", namespace: "n", key: k })).toBe("queued");
  expect(q.enqueue({ backend: "replica", namespace: "n", key: "d" })).toBe("overflow");
  expect(q.enqueue({ backend: "replica", namespace: "n", key: "e" })).toBe("overflow");
  expect(q.enqueue({ backend: "replica", namespace: "n", key: "a" })).toBe("deduplicated");
  expect(q.depth()).toBe(3);
  expect(q.needsCrawler()).toEqual(["replica"]);
  const text = metrics.render();
  expect(text).toContain('kvdrive_repair_overflow_total{backend="replica"} 2');
  expect(text).toContain('kvdrive_repair_needs_crawler{backend="replica"} 1');
  q.close();
  const re = open(dir, { maxEntries: 3 });
  expect(re.q.needsCrawler()).toEqual(["replica"]); // the mark survives a restart
  re.q.crawlerCovered("replica");
  expect(re.q.needsCrawler()).toEqual([]);
  re.q.close();
  const again = open(dir, { maxEntries: 3 });
  expect(again.q.needsCrawler()).toEqual([]);
  again.q.close();

  const byBytes = open(freshDir(), { maxBytes: 300 });
  let stored = 0;
  while (byBytes.q.enqueue({ backend: "b", namespace: "n", key: `key-${stored}` }) === "queued") stored++;
  expect(stored).toBeGreaterThan(0);
  expect(stored).toBeLessThan(10);
  expect(byBytes.q.needsCrawler()).toEqual(["b"]);
  byBytes.q.close();
});

test("bad items are refused with the field and the limit named; a closed queue refuses work", () => {
  const { q } = open(freshDir());
  expect(() => q.enqueue({ backend: "", namespace: "n", key: "k" })).toThrow("repair item backend must be a non-empty string");
  expect(() => q.enqueue({ backend: "b", namespace: "n", key: "x".repeat(2049) })).toThrow("repair item key of 2049 bytes exceeds the limit of 2048");
  expect(() => q.enqueue({ backend: "b", namespace: "n", key: "k", mechanism: "magic" as never })).toThrow(/write, read, crawler/);
  q.close();
  expect(() => q.enqueue({ backend: "b", namespace: "n", key: "k" })).toThrow(/closed/);
});
