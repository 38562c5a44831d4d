// A whole kvdrive on free ports against a test Postgres.
import fs from "node:fs";
import { loadConfig, type Config } from "../../src/config.ts";
import type { Clock } from "../../src/clock.ts";
import { startKvdrive, type Kvdrive } from "../../src/main.ts";
import { tempDir } from "./postgres.ts";

export const TEST_TOKEN = "test-token-0123456789";

export interface TestServer extends Kvdrive {
  config: Config;
  destroy(): Promise<void>;
}

export async function startTestServer(databaseUrl: string, overrides: Partial<Config> = {}, clock?: Clock): Promise<TestServer> {
  const dataDir = tempDir("kvdrive-srv-");
  const config = loadConfig({ databaseUrl: [databaseUrl], dataDir, httpPort: 0, pgPort: 0, workerdPort: "0", apiToken: TEST_TOKEN, ...overrides }, {});
  const kvd = await startKvdrive({ config, clock });
  return {
    ...kvd,
    config,
    async destroy() {
      await kvd.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
