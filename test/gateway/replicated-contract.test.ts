// The replicated backend runs the shared backend contract like every other backend: over two Postgres
// backends (two databases of one real Postgres, each its own Backend and pool), and over Postgres with a real s3rver
// replica (an object store without compare-and-swap: not atomic across keys, reads wait for both sides).
// Writes race in active-active mode, the mode that answers from either side.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll } from "bun:test";
import fs from "node:fs";
import { systemClock } from "../../src/clock.ts";
import { openRepairQueue, type RepairQueue } from "../../src/gateway/repair-queue.ts";
import { createReplicatedBackend, type ReplicatedBackend } from "../../src/gateway/replicated.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { openS3Replica } from "../../src/storage/s3-replica.ts";
import { openPostgresBackend } from "../../src/storage/store.ts";
import type { Backend } from "../../src/storage/backend.ts";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { startTestS3, type TestS3 } from "../helpers/s3.ts";
import { backendContract } from "../storage/contract.ts";

let pg: TestPostgres;
let s3: TestS3;
let dir: string;
const backends: Backend[] = [];
const queues: RepairQueue[] = [];
let twoPostgres: ReplicatedBackend;
let postgresAndS3: ReplicatedBackend;

function replicated(primary: Backend, replica: Backend, name: string, trustFirstAnswer: boolean): ReplicatedBackend {
  const metrics = createRegistry();
  const queue = openRepairQueue({ dir: `${dir}/${name}`, clock: systemClock, metrics });
  queues.push(queue);
  return createReplicatedBackend({ primary, replica, modeOf: () => "active-active", queue, metrics, clock: systemClock, timeoutMs: 10_000, trustFirstAnswer });
}

beforeAll(async () => {
  [pg, s3] = await Promise.all([startTestPostgres(), startTestS3("kv-replicated-contract")]);
  dir = tempDir("kvdrive-replicated-contract-");
  const admin = new Bun.SQL(pg.url, { max: 1 });
  await admin.unsafe("CREATE DATABASE second");
  await admin.unsafe("CREATE DATABASE third");
  await admin.close();
  const db = (name: string) => Object.assign(new URL(pg.url), { pathname: `/${name}` }).toString();
  const [a, b, c] = await Promise.all([openPostgresBackend(pg.url, 4), openPostgresBackend(db("second"), 4), openPostgresBackend(db("third"), 4)]);
  const bucket = await openS3Replica({ endpoint: s3.endpoint, bucket: s3.bucket, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, requestTimeoutMs: 5000 });
  backends.push(a, b, c, bucket);
  twoPostgres = replicated(a, b, "pg-pg", true);
  postgresAndS3 = replicated(c, bucket, "pg-s3", false);
}, 120_000);

afterAll(async () => {
  for (const q of queues) q.close();
  await Promise.allSettled(backends.map((x) => x.close()));
  await Promise.allSettled([pg?.destroy(), s3?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

backendContract("replicated (postgres + postgres)", () => twoPostgres, "rep-pg");
backendContract("replicated (postgres + s3)", () => postgresAndS3, "rep-s3", { atomic: false, largeWriteRows: 600, refusedRow: "both" });
