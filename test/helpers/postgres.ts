// A real embedded Postgres per test file, in its own temp dir, removed afterwards.
import { afterAll } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startTempPostgres, type TempPostgres } from "../../src/embedded/postgres.ts";

export type TestPostgres = TempPostgres;

export function tempDir(prefix = "kvdrive-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755); // the postgres user must reach the cluster inside when tests run as root
  return dir;
}

/** A temp dir removed after this test file's tests: call it at the top level of the file. */
export function tempDirForFile(prefix: string): string {
  const dir = tempDir(prefix);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const startTestPostgres = (settings?: Record<string, string | number>): Promise<TestPostgres> => startTempPostgres("kvdrive-test-", settings);

/** Every process of one Postgres cluster: the postmaster and its children (backends, checkpointer, ...), from /proc. */
export function clusterPids(postmaster: number): number[] {
  const pids = [postmaster];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === postmaster) pids.push(Number(d));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}
