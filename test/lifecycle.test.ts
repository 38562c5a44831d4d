// The process as users run it: `bun src/main.ts` with the embedded default or a given DATABASE_URL,
// configuration errors that name the variable, and SIGTERM under write load losing no acknowledged write.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { startTestPostgres, tempDir, type TestPostgres } from "./helpers/postgres.ts";
import { freePort, freePorts } from "../src/embedded/postgres.ts";

const root = path.resolve(import.meta.dir, "..");

function spawnKvdrive(env: Record<string, string>) {
  const proc = Bun.spawn(["bun", "src/main.ts"], { cwd: root, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  let out = "";
  const ready = (async () => {
    const reader = proc.stdout.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return out;
      out += dec.decode(value);
      if (out.includes("kvdrive ready") && out.includes("Postgres:")) {
        // Keep draining so the child never blocks on a full pipe.
        (async () => {
          for (;;) {
            const r = await reader.read();
            if (r.done) break;
            out += dec.decode(r.value);
          }
        })();
        return out;
      }
    }
  })();
  return { proc, ready, output: () => out };
}

describe("configuration errors", () => {
  test("a bad value stops start-up with a message naming the variable", async () => {
    const proc = Bun.spawn(["bun", "src/main.ts"], { cwd: root, env: { ...process.env, KVDRIVE_HTTP_PORT: "eighty", DATABASE_URL: "postgres://x@127.0.0.1:1/x" }, stderr: "pipe", stdout: "pipe" });
    expect(await proc.exited).not.toBe(0);
    expect(await new Response(proc.stderr).text()).toContain("KVDRIVE_HTTP_PORT");
    const proc2 = Bun.spawn(["bun", "src/main.ts"], { cwd: root, env: { ...process.env, DATABASE_URL: "mysql://nope" }, stderr: "pipe", stdout: "pipe" });
    expect(await proc2.exited).not.toBe(0);
    expect(await new Response(proc2.stderr).text()).toContain("DATABASE_URL");
  });

  test("a bad KVDRIVE_S3_ENDPOINT stops start-up before any server starts: no stack trace, no Postgres", async () => {
    const dataDir = path.join(tempDir("kvdrive-bad-s3-"), "data");
    const proc = Bun.spawn(["bun", "src/main.ts"], {
      cwd: root,
      env: { ...process.env, KVDRIVE_DATA_DIR: dataDir, KVDRIVE_S3_BUCKET: "b", KVDRIVE_S3_ENDPOINT: "not a url", KVDRIVE_HTTP_PORT: "0", KVDRIVE_PG_PORT: "0", KVDRIVE_WORKERD_PORT: "0" },
      stderr: "pipe",
      stdout: "pipe",
    });
    const [code, stderr, stdout] = await Promise.all([proc.exited, new Response(proc.stderr).text(), new Response(proc.stdout).text()]);
    expect(code).not.toBe(0);
    expect(stderr).toContain("KVDRIVE_S3_ENDPOINT");
    expect(stderr).toContain("http");
    expect(stderr + stdout).not.toMatch(/\n\s+at /);
    // The embedded Postgres would live in the data dir's pg/; the pooler would have said it listens.
    expect(fs.existsSync(path.join(dataDir, "pg"))).toBe(false);
    expect(stdout).not.toContain("listening");
    fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
  });
});

describe("bun start's allocator setting", () => {
  // The process is stopped by a bad setting right after start: what matters is the environment its allocator
  // read at birth, which mimalloc prints with MIMALLOC_VERBOSE (the `bun run` process prints its own first).
  const start = async (extra: Record<string, string>) => {
    const dataDir = path.join(tempDir("kvdrive-alloc-"), "data");
    const proc = Bun.spawn(["bun", "run", "start"], {
      cwd: root,
      env: { ...process.env, MIMALLOC_PURGE_HOLES: undefined, ...extra, MIMALLOC_VERBOSE: "1", KVDRIVE_DATA_DIR: dataDir, KVDRIVE_S3_BUCKET: "b", KVDRIVE_S3_ENDPOINT: "not a url" },
      stderr: "pipe",
      stdout: "pipe",
    });
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text(), new Response(proc.stdout).text()]);
    fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
    expect(code).not.toBe(0);
    expect(stderr).toContain("KVDRIVE_S3_ENDPOINT");
    // Each process prints its whole option table; the allocator of this Bun must know the option.
    expect(stderr).toMatch(/option 'purge_delay'/);
    return [...stderr.matchAll(/option 'purge_holes': (-?\d+)/g)].map((m) => Number(m[1]));
  };

  test("bun start runs kvdrive with the allocator's hole purging off (MIMALLOC_PURGE_HOLES=0)", async () => {
    const seen = await start({});
    expect(seen.length).toBe(2);
    expect(seen).toEqual([1, 0]);
  });

  test("a MIMALLOC_PURGE_HOLES of the user's own is kept", async () => {
    const seen = await start({ MIMALLOC_PURGE_HOLES: "1" });
    expect(seen).toEqual([1, 1]);
  });
});

describe("bun start on the embedded default", () => {
  test("starts a real embedded Postgres, prints URL and token, keeps the token 0600, reuses data on a second start", async () => {
    const dataDir = path.join(tempDir(), "data");
    const [httpPort, pgPort] = await freePorts(2);
    const env = { KVDRIVE_DATA_DIR: dataDir, KVDRIVE_HTTP_PORT: String(httpPort), KVDRIVE_PG_PORT: String(pgPort), DATABASE_URL: "", KVDRIVE_API_TOKEN: "" };
    const first = spawnKvdrive(env);
    const out = await first.ready;
    const url = /KV API:\s+(\S+)/.exec(out)![1]!;
    const token = /API token:\s+(\S+)/.exec(out)![1]!;
    expect(fs.statSync(path.join(dataDir, "api-token")).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(dataDir, "api-token"), "utf8").trim()).toBe(token);
    const headers = { authorization: `Bearer ${token}` };
    const ns = ((await (await fetch(`${url}/accounts/a/storage/kv/namespaces`, { method: "POST", headers, body: JSON.stringify({ title: "persist" }) })).json()) as any).result.id;
    expect((await fetch(`${url}/accounts/a/storage/kv/namespaces/${ns}/values/k`, { method: "PUT", headers, body: "kept" })).status).toBe(200);
    first.proc.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);

    const second = spawnKvdrive(env);
    const out2 = await second.ready;
    expect(out2).toContain(token);
    expect(await (await fetch(`${url}/accounts/a/storage/kv/namespaces/${ns}/values/k`, { headers })).text()).toBe("kept");
    second.proc.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
    fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
  });
});

describe("SIGTERM under load", () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startTestPostgres();
  }, 60_000);
  afterAll(async () => {
    await pg.destroy();
  }, 60_000);

  test("every acknowledged PUT survives, and the process exits 0", async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const token = "lifecycle-token-123";
    // A long group-commit window keeps batches pending at the moment the signal lands.
    const kvd = spawnKvdrive({ DATABASE_URL: pg.url, KVDRIVE_DATA_DIR: dataDir, KVDRIVE_HTTP_PORT: String(port), KVDRIVE_PG_PORT: "0", KVDRIVE_API_TOKEN: token, KVDRIVE_BATCH_WINDOW_MS: "20" });
    await kvd.ready;
    const base = `http://127.0.0.1:${port}/client/v4/accounts/a/storage/kv/namespaces`;
    const headers = { authorization: `Bearer ${token}` };
    const ns = ((await (await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: "sigterm" }) })).json()) as any).result.id;

    const acked: string[] = [];
    let stop = false;
    let n = 0;
    const writer = async () => {
      while (!stop) {
        const key = `k${n++}`;
        try {
          const res = await fetch(`${base}/${ns}/values/${key}`, { method: "PUT", headers, body: `value-${key}` });
          if (res.status === 200) acked.push(key);
        } catch {
          // Refused once the server stops accepting: not acknowledged, so not expected to survive.
        }
      }
    };
    const writers = Array.from({ length: 16 }, writer);
    while (acked.length < 300) await Bun.sleep(5);
    kvd.proc.kill("SIGTERM");
    const code = await kvd.proc.exited;
    stop = true;
    await Promise.all(writers);
    expect(code).toBe(0);
    expect(kvd.output()).toContain("SIGTERM received");

    const sql = new Bun.SQL(pg.url);
    const rows = await sql`SELECT convert_from(key, 'UTF8') AS key, convert_from(value, 'UTF8') AS value FROM kv_entries WHERE ns = ${ns}`;
    await sql.close();
    const stored = new Map(rows.map((r: any) => [r.key, r.value]));
    const lost = acked.filter((k) => stored.get(k) !== `value-${k}`);
    expect(acked.length).toBeGreaterThan(300);
    expect(lost).toEqual([]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
});
