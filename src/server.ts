// Assembles one kvdrive process: storage (embedded or given Postgres), the KV service, the HTTP API and
// the Postgres pooler. main.ts adds signals; tests call startKvdrive directly on free ports.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "./config.ts";
import { systemClock, type Clock } from "./clock.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded/postgres.ts";
import { createRegistry, type Registry } from "./metrics/registry.ts";
import { createKVService } from "./kv/service.ts";
import { createHttpApp } from "./http/app.ts";
import { sqlRoutes } from "./pool/sql-routes.ts";
import { kvAdminRoutes } from "./kv/admin.ts";
import { startPooler, type Pooler } from "./pool/pooler.ts";
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
export function resolveApiToken(config: Config): string {
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
    const kv = await createKVService({ urls: databaseUrls, config, clock, metrics, log });
    const origin = new URL(config.originDatabaseUrl ?? databaseUrls[0]!);
    const sql = sqlRoutes({ pooler, database: decodeURIComponent(origin.pathname.slice(1)) || "postgres", user: decodeURIComponent(origin.username) || "postgres" });
    const app = createHttpApp({ kv, config, metrics, apiToken, clock, plugins: [sql, kvAdminRoutes(kv)] });
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
