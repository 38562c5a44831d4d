// A flood of requests to random paths, with and without the token, against a kvdrive started as its own process
// (`bun src/main.ts`): /metrics stays small (labels are route templates) and the process's RSS stays bounded.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(300_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { TEST_TOKEN } from "../helpers/server.ts";

let pg: TestPostgres;
let dataDir: string;
let proc: ReturnType<typeof Bun.spawn>;
let base: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  dataDir = tempDir("kvdrive-res-");
  proc = Bun.spawn(["bun", path.join(import.meta.dir, "../../src/main.ts")], {
    env: { ...process.env, DATABASE_URL: pg.url, KVDRIVE_DATA_DIR: dataDir, KVDRIVE_HTTP_PORT: "0", KVDRIVE_PG_PORT: "0", KVDRIVE_WORKERD_PORT: "off", KVDRIVE_API_TOKEN: TEST_TOKEN, KVDRIVE_AUTH_FAILURE_DELAY_MS: "0" },
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  let out = "";
  while (!/KV API: +(http:\/\/\S+)\/client\/v4/.test(out)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`kvdrive exited before it was ready:\n${out}`);
    out += new TextDecoder().decode(value);
  }
  base = /KV API: +(http:\/\/\S+)\/client\/v4/.exec(out)![1]!;
  void (async () => {
    while (!(await reader.read()).done);
  })();
}, 120_000);
afterAll(async () => {
  proc?.kill("SIGTERM");
  await proc?.exited;
  fs.rmSync(dataDir, { recursive: true, force: true });
  await pg?.destroy();
}, 60_000);

function rssBytes(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))![1]!;
  return Number(kb) * 1024;
}

async function flood(n: number, seed: number) {
  let next = 0;
  const methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const segment = `${seed}-${i}-${"x".repeat(150)}`;
      const headers: Record<string, string> = i % 3 === 0 ? { authorization: `Bearer ${TEST_TOKEN}` } : i % 3 === 1 ? { authorization: `Bearer wrong-${i}` } : {};
      const res = await fetch(`${base}/${segment}/${i % 7}?q=${i}`, { method: methods[i % methods.length], headers });
      await res.arrayBuffer();
      expect(res.status).toBeLessThan(500);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

const metricsText = async () => (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } })).text();

test("20,000 requests to random paths grow neither /metrics nor RSS beyond a small bound", async () => {
  await flood(2000, 1);
  const metricsBefore = (await metricsText()).length;
  const rssBefore = rssBytes(proc.pid);
  await flood(20_000, 2);
  const text = await metricsText();
  const rssAfter = rssBytes(proc.pid);
  const mib = (b: number) => (b / 1048576).toFixed(1);
  console.log(`20,000 random paths: /metrics ${metricsBefore} -> ${text.length} bytes, RSS ${mib(rssBefore)} -> ${mib(rssAfter)} MiB`);
  expect(text.includes("xxxxxxxxxx")).toBe(false); // (not toContain: on failure that would print all of /metrics)
  expect(text.length - metricsBefore).toBeLessThan(16 * 1024);
  expect(text.length).toBeLessThan(512 * 1024);
  expect(rssAfter - rssBefore).toBeLessThan(128 * 1024 * 1024);
  expect((await fetch(`${base.replace(/\/$/, "")}/healthz`)).status).toBe(200);
});
