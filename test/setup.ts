// Preloaded by bunfig.toml: integration tests start real Postgres clusters and servers, which on a loaded
// 2-core machine can take longer than bun's 5 s default.
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(120_000);
