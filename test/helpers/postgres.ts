// A real embedded Postgres per test file, in its own temp dir, removed afterwards.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../src/embedded/postgres.ts";

export interface TestPostgres extends EmbeddedPostgres {
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

export function tempDir(prefix = "kvdrive-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755); // the postgres user must reach the cluster inside when tests run as root
  return dir;
}

export async function startTestPostgres(settings?: Record<string, string | number>): Promise<TestPostgres> {
  const dir = tempDir();
  const pg = await startEmbeddedPostgres({ dataDir: path.join(dir, "pg"), settings });
  return {
    ...pg,
    async destroy() {
      await pg.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
