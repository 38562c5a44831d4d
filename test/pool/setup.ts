// Shared set-up for pooler tests: a real embedded Postgres and a real pooler on a free port.
import { loadConfig, type Config } from "../../src/config.ts";
import { systemClock, type Clock } from "../../src/clock.ts";
import { createRegistry, type Registry } from "../../src/metrics/registry.ts";
import { startPooler, type Pooler } from "../../src/pool/pooler.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

export interface PoolerFixture {
  pg: TestPostgres;
  pooler: Pooler;
  metrics: Registry;
  config: Config;
  /** Client connection string for a database through the pooler. */
  url(database?: string, user?: string, password?: string): string;
  /** Direct connection string to the origin. */
  originUrl: string;
  stop(): Promise<void>;
}

export async function startPoolerFixture(overrides: Partial<Config> = {}, clock: Clock = systemClock, pg?: TestPostgres): Promise<PoolerFixture> {
  const ownPg = !pg;
  pg ??= await startTestPostgres();
  const config = loadConfig({ pgPort: 0, host: "127.0.0.1", ...overrides }, {});
  const metrics = createRegistry();
  const pooler = await startPooler({ config, originUrl: config.originDatabaseUrl ?? pg.url, clock, metrics });
  const p = pg;
  return {
    pg: p,
    pooler,
    metrics,
    config,
    originUrl: p.url,
    url: (database = "postgres", user = p.user, password = p.password) =>
      `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${pooler.port}/${encodeURIComponent(database)}`,
    async stop() {
      await pooler.stop();
      if (ownPg) await p.destroy();
    },
  };
}
