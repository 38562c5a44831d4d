// `bun run kvdrive …` as a user runs it: a real subprocess against real Postgres clusters.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import fs from "node:fs";
import { FULL_RANGE } from "../src/storage/digest.ts";
import { openShardedBackend } from "../src/storage/sharded.ts";
import type { StoredEntry } from "../src/storage/entry.ts";
import { startTestPostgres, tempDir, type TestPostgres } from "./helpers/postgres.ts";

const b = (s: string) => new TextEncoder().encode(s);
const row = (ns: string, key: string, value: string | null, ts: number): StoredEntry => ({
  ns, key: b(key), value: value === null ? null : b(value), metadata: null, expiration: null, version: { ts, nonce: 1 }, tombstone: value === null,
});

let pgs: TestPostgres[] = [];
let dir: string;
beforeAll(async () => {
  pgs = await Promise.all([0, 1, 2].map(() => startTestPostgres()));
  dir = tempDir("kvdrive-cli-");
}, 120_000);
afterAll(async () => {
  await Promise.all(pgs.map((p) => p.destroy()));
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

async function cli(args: string[], env: Record<string, string> = {}) {
  const p = Bun.spawn(["bun", "src/cli.ts", ...args], { env: { ...process.env, KVDRIVE_DATA_DIR: dir, ...env }, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code };
}

test("cli: help, unknown commands and bad flags", async () => {
  const help = await cli(["help"]);
  expect(help.code).toBe(0);
  expect(help.out).toContain("rebalance");
  const unknown = await cli(["frobnicate"]);
  expect(unknown.code).toBe(2);
  expect(unknown.err).toContain('unknown command "frobnicate"');
  const bad = await cli(["backfill", "--to"], { DATABASE_URL: pgs[0]!.url });
  expect(bad.code).toBe(2);
  expect(bad.err).toContain("--to needs a value");
  const empty = tempDir("kvdrive-cli-empty-");
  const noStorage = await cli(["rebalance"], { KVDRIVE_DATA_DIR: empty });
  fs.rmSync(empty, { recursive: true, force: true });
  expect(noStorage.code).toBe(2);
  expect(noStorage.err).toMatch(/DATABASE_URL is not set/);
});

test("cli: backfill copies every entry into the replica, tombstones included, and a second run copies nothing", async () => {
  const primary = await openShardedBackend([pgs[0]!.url], 2);
  const rows = Array.from({ length: 1200 }, (_, i) => row(i % 2 ? "ns-a" : "ns-b", `k${i}`, i % 50 ? `v${i}` : null, 10));
  await primary.write(rows);
  const env = { DATABASE_URL: pgs[0]!.url, KVDRIVE_REPLICA_DATABASE_URL: pgs[1]!.url };
  const first = await cli(["backfill", "--to", "replica"], env);
  expect(first.code).toBe(0);
  expect(first.err).toContain("backfill complete: copied 1200");
  expect(first.err).toMatch(/\[#+\] 100%/);
  const replica = await openShardedBackend([pgs[1]!.url], 2);
  for (const ns of ["ns-a", "ns-b"]) expect(await replica.digest(ns, FULL_RANGE, 0)).toEqual(await primary.digest(ns, FULL_RANGE, 0));
  const again = await cli(["backfill", "--to", "replica", "--namespace", "ns-a"], env);
  expect(again.code).toBe(0);
  expect(again.err).toContain("copied 0, already there 600");
  await primary.close();
  await replica.close();
});

test("cli: rebalance from one cluster to two moves about half of the keys to the new one", async () => {
  const two = await openShardedBackend([pgs[0]!.url], 2);
  await two.write(Array.from({ length: 3000 }, (_, i) => row("grow", `g${i}`, `v${i}`, 10)));
  await two.close();
  const res = await cli(["rebalance"], { DATABASE_URL: `${pgs[0]!.url},${pgs[2]!.url}` });
  expect(res.code).toBe(0);
  const m = /rebalance complete: moved (\d+) of (\d+)/.exec(res.err);
  expect(m).not.toBeNull();
  const share = Number(m![1]) / Number(m![2]);
  expect(share).toBeGreaterThan(0.35);
  expect(share).toBeLessThan(0.65);
  const after = await openShardedBackend([pgs[0]!.url, pgs[2]!.url], 2);
  expect(after.previous()).toBeNull();
  expect(await after.countEntries("grow")).toBe(3000);
  await after.close();
});
