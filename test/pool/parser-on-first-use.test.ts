// The Postgres parser (libpg-query) runs in a worker thread started when the first SQL needs it. Its WASM memory
// (128 MiB and more) counts towards the heap size of the VM that holds it, from which JavaScriptCore sizes the
// allocation it allows before collecting again: in kvdrive's own VM, 300-600 MiB of garbage piled up between
// collections under load (bun run bench kv-read: peak RSS 231-751 MiB; 129-147 MiB with the parser kept out).
// Each case runs a fresh kvdrive in a child process (bun test shares modules between files, so in this process the
// parser may be running already) and checks that the first SQL, from several clients at once, waits for the worker
// and gets its answers, and that kvdrive's heap never holds the parser's memory.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import path from "node:path";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startTestPostgres();
}, 60_000);
afterAll(async () => {
  await pg.destroy();
}, 60_000);

async function child(mode: "wire" | "http") {
  const proc = Bun.spawn(["bun", path.join(import.meta.dir, "../helpers/parser-first-use.ts"), pg.url, mode], { stdout: "pipe", stderr: "pipe" });
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const line = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || !line.startsWith("{")) throw new Error(`child exited ${code}: ${stdout}\n${stderr}`);
  return JSON.parse(line) as Record<string, any>;
}

test("KV traffic leaves the parser unstarted; the first wire clients wait for it and get their answers; kvdrive's heap never holds its memory", async () => {
  const r = await child("wire");
  expect(r.error).toBeUndefined();
  expect(r.kvValue).toBe("v");
  expect(r.loadedAfterKv).toBe(false);
  expect(r.extraMiBAfterKv).toBeLessThan(64);
  expect(r.wire).toEqual([2, "x", true, "INSERT"]);
  expect(r.loadedAfterSql).toBe(true);
  expect(r.extraMiBAfterSql).toBeLessThan(64); // the parser's 128+ MiB of WASM memory is the worker's
});

test("the first HTTP /sql requests, several at once, wait for the parser and get their answers", async () => {
  const r = await child("http");
  expect(r.error).toBeUndefined();
  expect(r.loadedAfterKv).toBe(false);
  expect(r.http).toEqual([
    [200, [{ n: 2 }]],
    [200, [{ t: "x" }]],
    [200, [{ n: 2 }]],
  ]);
  expect(r.loadedAfterSql).toBe(true);
});
