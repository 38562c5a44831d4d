// The system under test: an embedded Postgres in a temp dir, and kvdrive as its own process (`bun src/main.ts`)
// on free ports, so load generators and the server never share an event loop.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePorts, startTempPostgres, type TempPostgres } from "../../src/embedded/postgres.ts";
import { spawnUntil, type Child } from "./procs.ts";

/**
 * The environment `bun start` puts before kvdrive (package.json's start script: `NAME=${NAME:-default} …`), each
 * default taken unless this process has its own value: the bench measures kvdrive as users run it.
 */
const START_ENV: Record<string, string> = Object.fromEntries(
  [...(JSON.parse(fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")).scripts.start as string).matchAll(/(\w+)=\$\{\1:-([^}]*)\}/g)].map(([, name, dflt]) => [name!, process.env[name!] ?? dflt!]),
);

export const TOKEN = "bench-token-0123456789abcdef";
export const AUTH = { authorization: `Bearer ${TOKEN}` };

export type BenchPostgres = TempPostgres;

export const startBenchPostgres = (settings?: Record<string, string>): Promise<BenchPostgres> => startTempPostgres("kvdrive-bench-pg-", settings);

export interface KvdriveProcess {
  child: Child;
  pid: number;
  /** http://127.0.0.1:port */
  origin: string;
  /** Path prefix of the namespaces collection for account "bench". */
  nsCollection: string;
  pgPort: number;
  stop(): Promise<void>;
}

/** Starts `bun src/main.ts` against databaseUrl with extra environment (KVDRIVE_CACHE_BYTES=0 …). */
export async function startKvdriveProcess(databaseUrl: string, env: Record<string, string> = {}, bunArgs: string[] = []): Promise<KvdriveProcess> {
  const [httpPort, pgPort] = (await freePorts(2)) as [number, number];
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-bench-data-"));
  const child = await spawnUntil(
    ["bun", ...bunArgs, "src/main.ts"],
    { ...START_ENV, DATABASE_URL: databaseUrl, KVDRIVE_HTTP_PORT: String(httpPort), KVDRIVE_PG_PORT: String(pgPort), KVDRIVE_WORKERD_PORT: "0", KVDRIVE_DATA_DIR: dataDir, KVDRIVE_API_TOKEN: TOKEN, ...env },
    "kvdrive ready",
  ).catch((e) => {
    // A kvdrive that did not start leaves no data dir behind either.
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw e;
  });
  return {
    child,
    pid: child.proc.pid,
    origin: `http://127.0.0.1:${httpPort}`,
    nsCollection: `/client/v4/accounts/bench/storage/kv/namespaces`,
    pgPort,
    async stop() {
      await child.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Creates a namespace (or finds it by title) and returns the path prefix of its values. */
export async function namespace(k: KvdriveProcess, title: string): Promise<{ id: string; values: string; bulk: string }> {
  const res = await fetch(k.origin + k.nsCollection, { method: "POST", headers: AUTH, body: JSON.stringify({ title }) });
  let id: string | undefined = res.ok ? ((await res.json()) as { result?: { id: string } }).result?.id : undefined;
  if (!id) {
    const list = (await (await fetch(`${k.origin}${k.nsCollection}?per_page=100`, { headers: AUTH })).json()) as { result?: Array<{ title: string; id: string }> };
    id = list.result?.find((n) => n.title === title)?.id;
  }
  if (!id) throw new Error(`could not create namespace ${title} on ${k.origin}`);
  return { id, values: `${k.nsCollection}/${id}/values/`, bulk: `${k.nsCollection}/${id}/bulk` };
}

/** Endpoint check before any load: the status and, when given, the body length must match. */
export async function checkHttp(url: string, init: RequestInit, status: number, bodyBytes?: number): Promise<void> {
  const res = await fetch(url, init);
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== status || (bodyBytes !== undefined && body.byteLength !== bodyBytes)) {
    throw new Error(`endpoint check failed: ${init.method ?? "GET"} ${url} gave ${res.status} with ${body.byteLength} bytes, expected ${status}${bodyBytes !== undefined ? ` with ${bodyBytes} bytes` : ""}: ${new TextDecoder().decode(body.slice(0, 200))}`);
  }
}

export function pgUrl(user: string, password: string, port: number, db = "postgres"): string {
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;
}
