// How the CLI (workerd-config, dev) finds the kvdrive running on a data dir: the addresses it wrote at start-up
// (instance.json), its API token (KVDRIVE_API_TOKEN or api-token) and the pooler's client credentials
// (KVDRIVE_PG_USERS' first pair, else the origin URL's user and password, as the pooler itself does).
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../config.ts";
import { ConfigError } from "../errors.ts";

export const INSTANCE_FILE = "instance.json";

export interface InstanceInfo {
  pid: number;
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:8787 */
  http: string;
  /** HOST:PORT of the Postgres pooler. */
  postgres: string;
  /** HOST:PORT of the workerd KV-binding listener, or null when KVDRIVE_WORKERD_PORT is off. */
  workerd: string | null;
}

export interface RunningKvdrive extends InstanceInfo {
  apiToken: string;
  pgUser: string;
  pgPassword: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The kvdrive running on config.dataDir, or null when none is. */
export function findRunning(config: Config): RunningKvdrive | null {
  const file = path.join(config.dataDir, INSTANCE_FILE);
  if (!fs.existsSync(file)) return null;
  const info = JSON.parse(fs.readFileSync(file, "utf8")) as InstanceInfo;
  if (!alive(info.pid)) return null;
  return { ...info, apiToken: apiToken(config), ...pgCredentials(config) };
}

/** findRunning, or a ConfigError that says how to start one. */
export function requireRunning(config: Config): RunningKvdrive {
  const running = findRunning(config);
  if (!running) throw new ConfigError(`no kvdrive is running on the data dir ${config.dataDir} (no live ${INSTANCE_FILE}): start it with \`bun start\`, or set KVDRIVE_DATA_DIR`);
  if (!running.workerd) throw new ConfigError("the running kvdrive has KVDRIVE_WORKERD_PORT=off: restart it with a port for the KV-binding listener");
  return running;
}

function apiToken(config: Config): string {
  if (config.apiToken) return config.apiToken;
  const file = path.join(config.dataDir, "api-token");
  if (!fs.existsSync(file)) throw new ConfigError(`KVDRIVE_API_TOKEN is not set and ${file} does not exist`);
  return fs.readFileSync(file, "utf8").trim();
}

function pgCredentials(config: Config): { pgUser: string; pgPassword: string } {
  if (config.pgUsers.length) {
    const pair = config.pgUsers[0]!;
    const eq = pair.indexOf("=");
    return { pgUser: pair.slice(0, eq), pgPassword: pair.slice(eq + 1) };
  }
  let origin = config.originDatabaseUrl ?? config.databaseUrl[0];
  if (!origin) {
    const file = path.join(config.dataDir, "storage.json");
    if (!fs.existsSync(file)) throw new ConfigError(`cannot tell the pooler's password: set KVDRIVE_PG_USERS, ORIGIN_DATABASE_URL or DATABASE_URL (${file} does not exist)`);
    origin = (JSON.parse(fs.readFileSync(file, "utf8")) as { urls: string[] }).urls[0]!;
  }
  const u = new URL(origin);
  return { pgUser: decodeURIComponent(u.username) || "postgres", pgPassword: decodeURIComponent(u.password) };
}
