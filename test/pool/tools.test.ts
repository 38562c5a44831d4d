// psql and pgbench (the real binaries) through the pooler, with more clients than origin connections.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import fs from "node:fs";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let f: PoolerFixture;
const PGBENCH = ["/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench"].find((p) => fs.existsSync(p))!;

/** Runs a client binary without blocking the event loop (the pooler lives in this process). */
async function run(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, PGCONNECT_TIMEOUT: "10", PGSSLMODE: "prefer" } });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

const processed = (out: string) => Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]);

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 3 });
}, 60_000);
afterAll(async () => {
  await f.stop();
}, 60_000);

test("psql -c", async () => {
  const r = await run(["psql", f.url(), "-At", "-c", "select 40 + 2", "-c", "show application_name"]);
  expect(r.err).toBe("");
  expect(r.out).toBe("42\npsql\n");
});

test("pgbench -i, then -S and TPC-B in simple, extended and prepared modes with 6 clients on 3 connections", async () => {
  const init = await run([PGBENCH, "-i", "-s", "1", "-q", f.url()]);
  expect(init.code).toBe(0);
  for (const mode of ["simple", "extended", "prepared"]) {
    const sel = await run([PGBENCH, "-n", "-S", "-M", mode, "-c", "6", "-t", "100", f.url()]);
    expect({ mode, code: sel.code, err: sel.err.includes("error") ? sel.err : "" }).toEqual({ mode, code: 0, err: "" });
    expect(processed(sel.out)).toBe(600);
    const tpcb = await run([PGBENCH, "-n", "-M", mode, "-c", "6", "-t", "20", f.url()]);
    expect({ mode, code: tpcb.code, err: tpcb.err.includes("error") ? tpcb.err : "" }).toEqual({ mode, code: 0, err: "" });
    expect(processed(tpcb.out)).toBe(120);
  }
  const direct = await run(["psql", f.originUrl, "-At", "-c", "select count(*) from pgbench_history"]);
  expect(Number(direct.out.trim())).toBe(360);
  const s = f.pooler.stats().pools.find((p) => p.database === "postgres")!;
  expect(s.activeServers + s.idleServers).toBeLessThanOrEqual(3);
}, 120_000);

test("pgbench -C (a new connection per transaction)", async () => {
  const r = await run([PGBENCH, "-n", "-S", "-C", "-M", "prepared", "-c", "4", "-t", "25", f.url()]);
  expect(r.code).toBe(0);
  expect(processed(r.out)).toBe(100);
}, 60_000);
