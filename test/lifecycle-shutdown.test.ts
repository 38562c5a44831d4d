// Item 13 of issue 10: SIGTERM ends kvdrive within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS whatever its backends do.
// kvdrive runs as a subprocess (`bun src/main.ts`) over two Postgres shards and an s3rver replica in
// active-active; one shard is stopped, the other hung (every process of it SIGSTOPped), the replica halted,
// with writes in flight. It must exit non-zero, say in its log what it could not flush (with counts), and
// keep what it acknowledged. A second signal must not make it hang either.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(180_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { freePort, startEmbeddedPostgres, type EmbeddedPostgres } from "../src/embedded/postgres.ts";
import { clusterPids, startTestPostgres, tempDir, type TestPostgres } from "./helpers/postgres.ts";
import { startTestS3, type TestS3 } from "./helpers/s3.ts";

const root = path.resolve(import.meta.dir, "..");
const TOKEN = "shutdown-token-0123456789";
const SHUTDOWN_SECONDS = 3;

let pgs: TestPostgres[] = [];
let s3: TestS3;
const frozen = new Set<number>();

function freeze(pg: TestPostgres) {
  for (const pid of clusterPids(pg.pid)) {
    process.kill(pid, "SIGSTOP");
    frozen.add(pid);
  }
}

function thaw() {
  for (const pid of frozen) {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // exited
    }
  }
  frozen.clear();
}

beforeAll(async () => {
  [pgs, s3] = await Promise.all([Promise.all([0, 1].map(() => startTestPostgres())), startTestS3("kv-shutdown")]);
});

const restarted: EmbeddedPostgres[] = [];

afterAll(async () => {
  thaw();
  // A restarted cluster is its own server: destroy() stops only the first one, then removes the directory.
  for (const r of restarted) await r.stop().catch(() => {});
  for (const pg of pgs) await pg.destroy().catch(() => {});
  await s3?.stop();
});

/** A kvdrive on its own data dir and HTTP port, with the s3rver bucket as its replica. */
function replicaEnv(dataDir: string, port: number): Record<string, string> {
  return {
    KVDRIVE_REPLICA_S3_BUCKET: s3.bucket,
    KVDRIVE_REPLICA_S3_ENDPOINT: s3.endpoint,
    KVDRIVE_REPLICA_S3_ACCESS_KEY_ID: s3.accessKeyId,
    KVDRIVE_REPLICA_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    KVDRIVE_DATA_DIR: dataDir,
    KVDRIVE_HTTP_PORT: String(port),
    KVDRIVE_PG_PORT: "0",
    KVDRIVE_API_TOKEN: TOKEN,
  };
}

/** The shutdown bound under test, and a backend timeout longer than it: a write to a hung backend is still
 * waiting when the signal lands. */
const BOUNDED = { KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS: String(SHUTDOWN_SECONDS), KVDRIVE_BACKEND_TIMEOUT_MS: "60000" };

function spawnKvdrive(env: Record<string, string>) {
  const proc = Bun.spawn(["bun", "src/main.ts"], { cwd: root, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  let out = "";
  const drain = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) out += dec.decode(chunk);
  };
  void drain(proc.stdout);
  void drain(proc.stderr);
  const ready = (async () => {
    for (let i = 0; i < 1200 && !out.includes("kvdrive ready"); i++) {
      if (proc.exitCode !== null) throw new Error(`kvdrive exited during start-up:\n${out}`);
      await Bun.sleep(50);
    }
    if (!out.includes("kvdrive ready")) throw new Error(`kvdrive did not start:\n${out}`);
  })();
  return { proc, ready, output: () => out };
}

/** Exit code, or null when the process is still alive after `ms` (then it is SIGKILLed). */
async function exitWithin(proc: ReturnType<typeof Bun.spawn>, ms: number): Promise<number | null> {
  const code = await Promise.race([proc.exited, Bun.sleep(ms).then(() => null)]);
  if (code === null) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
  return code;
}

describe("SIGTERM with every backend stopped or hung", () => {
  test("exits within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS, non-zero, reporting what it could not flush; acknowledged writes are kept", async () => {
    const dataDir = tempDir("kvdrive-shutdown-");
    const port = await freePort();
    const kvd = spawnKvdrive({ ...replicaEnv(dataDir, port), ...BOUNDED, DATABASE_URL: pgs.map((p) => p.url).join(","), KVDRIVE_INVALIDATION: "false" });
    await kvd.ready;
    const base = `http://127.0.0.1:${port}/client/v4/accounts/a/storage/kv/namespaces`;
    const headers = { authorization: `Bearer ${TOKEN}` };
    const ns = ((await (await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: "shutdown" }) })).json()) as any).result.id;
    const acked: string[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await fetch(`${base}/${ns}/values/k${i}`, { method: "PUT", headers, body: `v${i}` });
      if (res.status === 200) acked.push(`k${i}`);
    }
    expect(acked.length).toBe(40);

    // Backends gone: the first shard stopped, the second hung, the replica halted.
    await pgs[0]!.stop();
    freeze(pgs[1]!);
    await s3.halt();
    // Writes in flight to the hung shard when the signal lands.
    const inflight = Array.from({ length: 20 }, (_, i) => fetch(`${base}/${ns}/values/late${i}`, { method: "PUT", headers, body: "late" }).then((r) => r.status, () => 0));
    await Bun.sleep(300);

    kvd.proc.kill("SIGTERM");
    await Bun.sleep(200);
    kvd.proc.kill("SIGTERM"); // a second signal neither restarts nor blocks the bounded shutdown
    const code = await exitWithin(kvd.proc, SHUTDOWN_SECONDS * 1000 + 20_000);
    const statuses = await Promise.all(inflight);
    if (code === null) console.log(kvd.output());
    expect(code).not.toBeNull();
    expect(code).not.toBe(0);
    expect(kvd.output()).toContain("SIGTERM received");
    // What could not be flushed is named with counts.
    expect(kvd.output()).toMatch(/shutdown did not finish within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS=3/);
    expect(kvd.output()).toMatch(/\d+ write rows? not flushed/);
    expect(kvd.output()).toMatch(/repair queue: \d+ keys?/);
    // No in-flight write was acknowledged: none of them could reach any backend.
    expect(statuses.filter((s) => s === 200)).toEqual([]);

    // Acknowledged writes are kept: bring the backends back and read them from a new kvdrive.
    thaw();
    const again0 = await startEmbeddedPostgres({ dataDir: pgs[0]!.dataDir, port: pgs[0]!.port });
    restarted.push(again0);
    pgs[0]!.stop = again0.stop;
    await s3.resume();
    const again = spawnKvdrive({ ...replicaEnv(dataDir, port), DATABASE_URL: pgs.map((p) => p.url).join(","), KVDRIVE_INVALIDATION: "false" });
    await again.ready;
    const values = await Promise.all(acked.map(async (k) => (await fetch(`${base}/${ns}/values/${k}`, { headers })).text()));
    expect(values).toEqual(acked.map((k) => `v${k.slice(1)}`));
    again.proc.kill("SIGTERM");
    expect(await exitWithin(again.proc, 60_000)).toBe(0);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
});

/** The postmaster pid of an embedded cluster under the data dir, or null when it is not running. */
function postmasterPid(dir: string): number | null {
  try {
    const pid = Number(fs.readFileSync(path.join(dir, "postmaster.pid"), "utf8").split("\n")[0]);
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

describe("SIGTERM with two embedded shards and the replica stopped or hung", () => {
  test("exits within the bound, and the embedded servers it could not wait for are asked to stop, not left behind", async () => {
    const dataDir = tempDir("kvdrive-shutdown-emb-");
    const port = await freePort();
    const kvd = spawnKvdrive({ ...replicaEnv(dataDir, port), ...BOUNDED, DATABASE_URL: "", KVDRIVE_EMBEDDED_SHARDS: "2" });
    let hung: number[] = [];
    try {
      await kvd.ready;
      const base = `http://127.0.0.1:${port}/client/v4/accounts/a/storage/kv/namespaces`;
      const headers = { authorization: `Bearer ${TOKEN}` };
      const ns = ((await (await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: "shutdown-embedded" }) })).json()) as any).result.id;
      for (let i = 0; i < 20; i++) expect((await fetch(`${base}/${ns}/values/k${i}`, { method: "PUT", headers, body: `v${i}` })).status).toBe(200);

      const first = postmasterPid(path.join(dataDir, "pg"))!;
      const second = postmasterPid(path.join(dataDir, "pg-2"))!;
      expect(first).toBeGreaterThan(0);
      expect(second).toBeGreaterThan(0);
      await s3.halt();
      process.kill(first, "SIGQUIT"); // the first shard crashes (immediate shutdown)
      hung = clusterPids(second);
      for (const pid of hung) process.kill(pid, "SIGSTOP"); // the second hangs
      const late = Array.from({ length: 10 }, (_, i) => fetch(`${base}/${ns}/values/late${i}`, { method: "PUT", headers, body: "late" }).then((r) => r.status, () => 0));
      await Bun.sleep(300);

      kvd.proc.kill("SIGTERM");
      const code = await exitWithin(kvd.proc, SHUTDOWN_SECONDS * 1000 + 20_000);
      if (code === null) console.log(kvd.output());
      expect(code).not.toBeNull();
      expect(code).not.toBe(0);
      expect(kvd.output()).toMatch(/shutdown did not finish within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS=3/);
      expect(kvd.output()).toMatch(/embedded Postgres asked to stop/);
      expect((await Promise.all(late)).filter((s) => s === 200)).toEqual([]);

      // The hung shard got its stop request while frozen: once it runs again it shuts down by itself.
      for (const pid of hung) process.kill(pid, "SIGCONT");
      hung = [];
      let alive = true;
      for (let i = 0; i < 600 && alive; i++) {
        try {
          process.kill(second, 0);
          await Bun.sleep(50);
        } catch {
          alive = false;
        }
      }
      expect(alive).toBe(false);
    } finally {
      for (const pid of hung) process.kill(pid, "SIGCONT");
      if (kvd.proc.exitCode === null) kvd.proc.kill("SIGKILL");
      for (const dir of ["pg", "pg-2"]) {
        const pid = postmasterPid(path.join(dataDir, dir));
        if (pid) process.kill(pid, "SIGKILL");
      }
      await s3.resume();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
