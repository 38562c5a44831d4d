// Preloaded by bunfig.toml: integration tests start real Postgres clusters and servers, which on a loaded
// 2-core machine can take longer than bun's 5 s default. Bun applies a default timeout set here to the first
// test file only, so every test file also sets it itself (setDefaultTimeout at its top).
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(120_000);
