// `bun start`: load the config, start kvdrive, print how to reach it, and shut down cleanly on SIGTERM/SIGINT.
import { ConfigError, loadConfig, redact } from "./config.ts";
import { startKvdrive } from "./server.ts";

let config;
try {
  config = loadConfig();
} catch (e) {
  if (e instanceof ConfigError) {
    console.error(`kvdrive: configuration error: ${e.message}`);
    process.exit(2);
  }
  throw e;
}

const kvd = await startKvdrive({ config, log: (l) => console.log(l) });
console.log(`kvdrive ready
  KV API:    ${kvd.httpUrl}/client/v4
  API token: ${kvd.apiToken}
  storage:   ${kvd.databaseUrls.map(redact).join(", ")}
  Postgres:  ${kvd.pgUrl}`);

let exiting = false;
async function shutdown(signal: string) {
  if (exiting) return;
  exiting = true;
  console.log(`kvdrive: ${signal} received, flushing and shutting down`);
  try {
    await kvd.stop();
    process.exit(0);
  } catch (e) {
    console.error("kvdrive: shutdown failed:", e);
    process.exit(1);
  }
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
