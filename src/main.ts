// `bun start`: the one place that wires kvdrive together. config -> storage (embedded or given Postgres) ->
// the gateway -> the KV service, and the Postgres pooler -> the HTTP app, which is handed the KV routes and
// the pooler's SQL routes -> Bun.serve; then the workerd KV-binding listener. Run as the entry point it also
// prints how to reach kvdrive and shuts down on SIGTERM/SIGINT within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS whatever
// the backends do. Tests (and `bun run kvdrive dev`) call startKvdrive directly.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { systemClock, type Clock } from "./clock.ts";
import { loadConfig, redact, type Config } from "./config.ts";
import { signalEmbeddedPostgres, startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded/postgres.ts";
import { ConfigError } from "./errors.ts";
import { openGateway } from "./gateway/open.ts";
import { abandonAll, type PendingReport } from "./gateway/shutdown.ts";
import { createHttpApp } from "./http/app.ts";
import { kvAdminRoutes } from "./kv/admin.ts";
import { kvHttp } from "./kv/routes.ts";
import { kvService } from "./kv/service.ts";
import { createRegistry, type Registry } from "./metrics/registry.ts";
import { startPooler, type Pooler } from "./pool/pooler.ts";
import { sqlRoutes } from "./pool/sql-routes.ts";
import { startWorkerdListener, type WorkerdListener } from "./workerd/listener.ts";

export interface StartOptions {
  config: Config;
  clock?: Clock;
  log?: (line: string) => void;
}

export interface Kvdrive {
  httpUrl: string;
  httpPort: number;
  apiToken: string;
  /** Postgres clusters holding KV data. */
  databaseUrls: string[];
  metrics: Registry;
  /** The Postgres wire-protocol pooler (Hyperdrive): its port and a client connection string. */
  pooler: Pooler;
  pgPort: number;
  pgUrl: string;
  /** The workerd KV-binding listener's port (KVDRIVE_WORKERD_PORT), or null when it is off. */
  workerdPort: number | null;
  stop(): Promise<void>;
}

/** KVDRIVE_API_TOKEN, or a token generated once and kept in the data dir with mode 0600. */
function resolveApiToken(config: Config): string {
  if (config.apiToken) return config.apiToken;
  const file = path.join(config.dataDir, "api-token");
  if (fs.existsSync(file)) return fs.readFileSync(file, "utf8").trim();
  const token = randomBytes(24).toString("base64url");
  fs.writeFileSync(file, token + "\n", { mode: 0o600 });
  return token;
}

export async function startKvdrive(opts: StartOptions): Promise<Kvdrive> {
  const { config } = opts;
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? (() => {});
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o755 });
  const apiToken = resolveApiToken(config);
  const metrics = createRegistry({ maxSeriesPerMetric: config.metricSeriesMax });

  const embedded: EmbeddedPostgres[] = [];
  let pooler: Pooler | undefined;
  const stopAll = async () => {
    await pooler?.stop();
    await Promise.all(embedded.map((pg) => pg.stop()));
  };
  try {
    if (config.databaseUrl.length === 0) {
      // KVDRIVE_EMBEDDED_SHARDS clusters: pg/ (the first, also the pooler's origin), then pg-2/, pg-3/…
      for (let i = 1; i <= config.embeddedShards; i++) {
        embedded.push(await startEmbeddedPostgres({ dataDir: path.join(config.dataDir, i === 1 ? "pg" : `pg-${i}`) }));
      }
    }
    const databaseUrls = config.databaseUrl.length ? config.databaseUrl : embedded.map((pg) => pg.url);
    // `bun run kvdrive rebalance|backfill` finds the running clusters here (it holds passwords: owner only).
    fs.writeFileSync(path.join(config.dataDir, "storage.json"), JSON.stringify({ urls: databaseUrls }) + "\n", { mode: 0o600 });

    // The pooler's origin: ORIGIN_DATABASE_URL, else the (embedded) storage Postgres.
    pooler = await startPooler({ config, originUrl: config.originDatabaseUrl ?? databaseUrls[0]!, clock, metrics, log });
    const kv = kvService(await openGateway({ urls: databaseUrls, config, clock, metrics, log }), clock);
    const origin = new URL(config.originDatabaseUrl ?? databaseUrls[0]!);
    const sql = sqlRoutes({ pooler, database: decodeURIComponent(origin.pathname.slice(1)) || "postgres", user: decodeURIComponent(origin.username) || "postgres" });
    const api = kvHttp(kv, clock);
    const app = createHttpApp({ config, metrics, apiToken, ready: () => kv.ready(), plugins: [api.routes, sql, kvAdminRoutes(kv)], native: api.native, label: api.label });
    const server = Bun.serve({
      // No request is exempt from the idle timeout: long admin work runs in the background and is polled.
      // The hot value routes are matched by Bun itself; everything else goes through the Elysia app.
      routes: app.routes,
      fetch: (req) => app.fetch(req),
      hostname: config.host,
      port: config.httpPort,
      idleTimeout: config.httpIdleTimeoutSeconds,
      maxRequestBodySize: config.httpMaxBodyBytes,
    });
    const httpUrl = `http://${config.host}:${server.port}`;
    log(`kvdrive HTTP listening on ${httpUrl}`);
    let workerd: WorkerdListener | null;
    try {
      workerd = await startWorkerdListener({ config, kv, apiToken, clock, metrics, log, httpPort: server.port!, pgPort: pooler.port });
    } catch (e) {
      server.stop(true);
      await kv.close();
      throw e;
    }

    let stopping: Promise<void> | undefined;
    return {
      httpUrl,
      httpPort: server.port!,
      apiToken,
      databaseUrls,
      metrics,
      pooler,
      pgPort: pooler.port,
      pgUrl: pooler.connectionString(),
      workerdPort: workerd?.port ?? null,
      stop() {
        // Order matters: stop accepting, flush what was accepted, then close storage.
        stopping ??= (async () => {
          await pooler!.stop();
          await server.stop(false);
          await workerd?.stop();
          await kv.close();
          await stopAll();
        })();
        return stopping;
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** What the shutdown could not flush, with counts (parking what is still in flight first). */
function leftBehind(r: PendingReport = abandonAll()): string {
  const queued = Object.entries(r.repairQueue);
  const total = queued.reduce((n, [, k]) => n + k, 0);
  const byBackend = queued.length ? ` (${queued.map(([b, n]) => `${b} ${n}`).join(", ")})` : "";
  return (
    `${r.unflushedRows} write rows not flushed (never acknowledged: their clients got no success); ` +
    `${r.parkedRows} rows in flight to one backend parked in the durable repair queue; ` +
    `repair queue: ${total} keys${byBackend}, replayed at the next start`
  );
}

/** A bad setting: its message alone (it names the variable), exit code 2. Anything else is thrown on. */
function exitOnConfigError(e: unknown): never {
  if (!(e instanceof ConfigError)) throw e;
  console.error(`kvdrive: configuration error: ${e.message}`);
  process.exit(2);
}

/** `bun start`: a bad setting exits 2 with its message before anything starts; signals stop kvdrive in order. */
async function main() {
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    exitOnConfigError(e);
  }
  // A ConfigError raised once start-up began (a backend checking its own options) is reported the same way.
  const kvd = await startKvdrive({ config, log: (l) => console.log(l) }).catch(exitOnConfigError);
  console.log(`kvdrive ready
  KV API:    ${kvd.httpUrl}/client/v4
  API token: ${kvd.apiToken}
  storage:   ${kvd.databaseUrls.map(redact).join(", ")}
  Postgres:  ${kvd.pgUrl}${kvd.workerdPort === null ? "" : `
  Workers:   KV bindings on ${config.host}:${kvd.workerdPort} (bun run kvdrive workerd-config, bun run kvdrive dev)`}`);

  // Bun's allocator (mimalloc) returns the free parts of pages still in use to the OS every 100 ms; under load
  // that is hundreds of madvise calls a second, each a TLB flush on every core. `bun start` turns that off
  // (freed whole pages are still returned).
  if (process.env.MIMALLOC_PURGE_HOLES === undefined) console.log("kvdrive: MIMALLOC_PURGE_HOLES is not set (started without `bun start`): Bun's allocator keeps returning parts of pages to the OS, which costs CPU under load (see README, Performance)");

  const limitSeconds = config.shutdownTimeoutSeconds;

  /**
   * The deadline passed (or the orderly stop failed): park writes in flight to a backend in the durable repair
   * queue, say with counts what was left, ask the embedded servers to stop, and exit non-zero. Nothing acknowledged
   * is lost: an acknowledged write is on at least one backend, and the other gets it from the repair queue.
   */
  function abandon(why: string): never {
    const embedded = signalEmbeddedPostgres();
    console.error(`kvdrive: ${why}: ${leftBehind()}${embedded ? `; ${embedded} embedded Postgres asked to stop` : ""}`);
    process.exit(1);
  }

  let exiting = false;
  async function shutdown(signal: string) {
    if (exiting) {
      // A repeated signal changes nothing: the first one's deadline still ends the process.
      console.log(`kvdrive: ${signal} received again: already shutting down, within ${limitSeconds} s at most`);
      return;
    }
    exiting = true;
    console.log(`kvdrive: ${signal} received, flushing and shutting down (at most KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS=${limitSeconds} s)`);
    setTimeout(() => abandon(`shutdown did not finish within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS=${limitSeconds}`), limitSeconds * 1000);
    try {
      await kvd.stop();
    } catch (e) {
      console.error("kvdrive: shutdown failed:", e);
      abandon("shutdown failed");
    }
    // Stopped in time: still, rows whose final flush failed were not written (their clients were told).
    const r = abandonAll();
    if (r.unflushedRows > 0) {
      console.error(`kvdrive: shut down, but not everything was flushed: ${leftBehind(r)}`);
      process.exit(1);
    }
    const queued = Object.values(r.repairQueue).reduce((n, k) => n + k, 0);
    if (queued > 0) console.log(`kvdrive: shut down; the repair queue holds ${queued} keys, replayed at the next start`);
    process.exit(0);
  }
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

if (import.meta.main) await main();
