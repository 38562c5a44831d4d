// TLS on both sides: clients reach the pooler with sslmode require/verify-full (SSLRequest answered 'S'),
// and the pooler reaches a TLS-only origin with sslmode require/verify-full.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let dir: string;
let origin: TestPostgres;
let f: PoolerFixture;

async function run(cmd: string[]) {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

beforeAll(async () => {
  dir = tempDir("kvdrive-tls-");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "2",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], { stdio: "ignore" });
  // The origin's copy must belong to the postgres user with a private key mode.
  const pgDir = path.join(dir, "pg-tls");
  fs.mkdirSync(pgDir, { mode: 0o755 });
  for (const f of ["cert.pem", "key.pem"]) fs.copyFileSync(path.join(dir, f), path.join(pgDir, f));
  fs.chmodSync(path.join(pgDir, "key.pem"), 0o600);
  if (process.getuid?.() === 0) execFileSync("chown", ["-R", "postgres:postgres", pgDir]);
  origin = await startTestPostgres({ ssl: "on", ssl_cert_file: path.join(pgDir, "cert.pem"), ssl_key_file: path.join(pgDir, "key.pem") });
  f = await startPoolerFixture({ pgTlsCert: path.join(dir, "cert.pem"), pgTlsKey: path.join(dir, "key.pem"), originDatabaseUrl: `${origin.url}?sslmode=verify-full&sslrootcert=${path.join(dir, "cert.pem")}` }, undefined, origin);
}, 60_000);
afterAll(async () => {
  await f.stop();
  await origin.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

test("psql connects to the pooler over TLS (sslmode=verify-full) and the pooler to the origin over verified TLS", async () => {
  const r = await run(["psql", `${f.url()}?sslmode=verify-full&sslrootcert=${path.join(dir, "cert.pem")}`, "-At", "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()", "-c", "\\conninfo"]);
  expect(r.err).toBe("");
  expect(r.out).toStartWith("t\n"); // the origin connection serving psql is TLS
  expect(r.out).toContain("SSL connection"); // and psql's own connection is TLS
});

test("node-postgres with ssl", async () => {
  const c = new pg.Client({ connectionString: f.url(), ssl: { ca: fs.readFileSync(path.join(dir, "cert.pem"), "utf8") } });
  await c.connect();
  expect((await c.query("select 1 + 1 as two")).rows[0].two).toBe(2);
  await c.end();
});

test("origin sslmode=require, and verify-full without the CA is refused", async () => {
  const req = await startPoolerFixture({ originDatabaseUrl: `${origin.url}?sslmode=require` }, undefined, origin);
  const bad = await startPoolerFixture({ originDatabaseUrl: `${origin.url}?sslmode=verify-full` }, undefined, origin);
  try {
    const c = new pg.Client({ connectionString: req.url() });
    await c.connect();
    expect((await c.query("select ssl from pg_stat_ssl where pid = pg_backend_pid()")).rows[0].ssl).toBe(true);
    await c.end();
    const err = await new pg.Client({ connectionString: bad.url() }).connect().catch((e) => e);
    expect(err.code).toBe("08006");
    expect(err.message).toContain("TLS");
  } finally {
    await req.stop();
    await bad.stop();
  }
});
