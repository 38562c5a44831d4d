// Preloaded by bunfig.toml: integration tests start real Postgres clusters and servers, which on a loaded
// 2-core machine can take longer than bun's 5 s default. Bun applies a default timeout set here to the first
// test file only, so every test file also sets it itself (setDefaultTimeout at its top).
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(120_000);
// Every kvdrive a test starts (in process or as `bun src/main.ts` with process.env) takes a free port for the
// workerd KV-binding listener, so test files and parallel runs never race for its default 8789.
process.env.KVDRIVE_WORKERD_PORT ??= "0";
