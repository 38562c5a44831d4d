// Peers a user would pick instead (PgBouncer, Redis), started from the bench on free loopback ports with
// generated config in a temp dir, and always stopped. A missing peer is reported, never installed here.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "../../src/embedded/postgres.ts";

export interface Peer {
  port: number;
  /** The peer's process, for CPU accounting. */
  pid?: number;
  stop(): Promise<void>;
}

export const installed = (bin: string) => Bun.which(bin) !== null;

async function waitForPort(port: number, proc: ReturnType<typeof Bun.spawn>, name: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}`);
    try {
      const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      s.end();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${name} did not listen on ${port} within ${timeoutMs} ms`);
      await Bun.sleep(50);
    }
  }
}

function stopper(proc: ReturnType<typeof Bun.spawn>, dir: string) {
  return async () => {
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await proc.exited;
    clearTimeout(t);
    fs.rmSync(dir, { recursive: true, force: true });
  };
}

export interface PgBouncerOptions {
  originPort: number;
  user: string;
  password: string;
  /** transaction (the comparison) or session. */
  mode: "transaction" | "session";
  poolSize: number;
}

/** PgBouncer with SCRAM for clients and for the origin (a plain password in the auth file allows both). */
export async function startPgBouncer(o: PgBouncerOptions): Promise<Peer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-bench-pgb-"));
  fs.chmodSync(dir, 0o755);
  const port = await freePort();
  const ini = path.join(dir, "pgbouncer.ini");
  fs.writeFileSync(path.join(dir, "userlist.txt"), `"${o.user}" "${o.password}"\n`, { mode: 0o644 });
  fs.writeFileSync(
    ini,
    [
      "[databases]",
      `* = host=127.0.0.1 port=${o.originPort}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = scram-sha-256",
      `auth_file = ${path.join(dir, "userlist.txt")}`,
      `pool_mode = ${o.mode}`,
      `default_pool_size = ${o.poolSize}`,
      "max_client_conn = 10000",
      "ignore_startup_parameters = extra_float_digits",
      "log_connections = 0",
      "log_disconnections = 0",
      "",
    ].join("\n"),
    { mode: 0o644 },
  );
  // PgBouncer refuses to run as root; -u drops to the postgres user that the embedded server already uses.
  const asRoot = process.getuid?.() === 0;
  const proc = Bun.spawn(["pgbouncer", ...(asRoot ? ["-u", "postgres"] : []), ini], { stdout: "pipe", stderr: "pipe" });
  const stop = stopper(proc, dir);
  try {
    await waitForPort(port, proc, "pgbouncer");
  } catch (e) {
    const err = await new Response(proc.stderr).text().catch(() => "");
    await stop();
    throw new Error(`${(e as Error).message}: ${err.slice(0, 300)}`);
  }
  return { port, pid: proc.pid, stop };
}

export async function startRedis(): Promise<Peer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-bench-redis-"));
  const port = await freePort();
  const proc = Bun.spawn(["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no"], { stdout: "pipe", stderr: "pipe" });
  const stop = stopper(proc, dir);
  try {
    await waitForPort(port, proc, "redis-server");
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, stop };
}

export interface S3rver extends Peer {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** s3rver (the npm dev dependency) as its own Node process with one bucket; its fixed credentials are S3RVER. */
export async function startS3rver(bucket = "kvdrive-bench"): Promise<S3rver> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-bench-s3-"));
  const port = await freePort();
  const bin = new URL("../../node_modules/s3rver/bin/s3rver.js", import.meta.url).pathname;
  const proc = Bun.spawn(["node", bin, "-d", dir, "-a", "127.0.0.1", "-p", String(port), "-s", "--configure-bucket", bucket], { stdout: "pipe", stderr: "pipe" });
  const stop = stopper(proc, dir);
  try {
    await waitForPort(port, proc, "s3rver");
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, stop, endpoint: `http://127.0.0.1:${port}`, bucket, accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
}
