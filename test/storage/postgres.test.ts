import { afterAll, beforeAll } from "bun:test";
import { openPostgresBackend, type Backend } from "../../src/storage/store.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { backendContract } from "./contract.ts";

let pg: TestPostgres;
let backend: Backend;
beforeAll(async () => {
  pg = await startTestPostgres();
  backend = await openPostgresBackend(pg.url, 4);
});
afterAll(async () => {
  await backend.close();
  await pg.destroy();
});

backendContract("postgres", () => backend);
