// `bun start`: load the config, start kvdrive, print how to reach it, and shut down on SIGTERM/SIGINT within
// KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS whatever the backends do.
import { loadConfig, redact } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { signalEmbeddedPostgres } from "./embedded/postgres.ts";
import { startKvdrive } from "./server.ts";
import { abandonAll, type PendingReport } from "./gateway/shutdown.ts";

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
  Postgres:  ${kvd.pgUrl}${kvd.workerdPort === null ? "" : `
  Workers:   KV bindings on ${config.host}:${kvd.workerdPort} (bun run kvdrive workerd-config, bun run kvdrive dev)`}`);

const limitSeconds = config.shutdownTimeoutSeconds;

/**
 * The deadline passed (or the orderly stop failed): park writes in flight to a backend in the durable repair
 * queue, say with counts what was left, ask the embedded servers to stop, and exit non-zero. Nothing acknowledged
 * is lost: an acknowledged write is on at least one backend, and the other gets it from the repair queue.
 */
function abandon(why: string): never {
  const embedded = signalEmbeddedPostgres();
  console.error(`kvdrive: ${why}: ${leftBehind()}${embedded ? `; ${embedded} embedded Postgres asked to stop` : ""}`);
  process.exit(1);
}

/** What the shutdown could not flush, with counts (parking what is still in flight first). */
function leftBehind(r: PendingReport = abandonAll()): string {
  const queued = Object.entries(r.repairQueue);
  const total = queued.reduce((n, [, k]) => n + k, 0);
  const byBackend = queued.length ? ` (${queued.map(([b, n]) => `${b} ${n}`).join(", ")})` : "";
  return (
    `${r.unflushedRows} write rows not flushed (never acknowledged: their clients got no success); ` +
    `${r.parkedRows} rows in flight to one backend parked in the durable repair queue; ` +
    `repair queue: ${total} keys${byBackend}, replayed at the next start`
  );
}

let exiting = false;
async function shutdown(signal: string) {
  if (exiting) {
    // A repeated signal changes nothing: the first one's deadline still ends the process.
    console.log(`kvdrive: ${signal} received again: already shutting down, within ${limitSeconds} s at most`);
    return;
  }
  exiting = true;
  console.log(`kvdrive: ${signal} received, flushing and shutting down (at most KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS=${limitSeconds} s)`);
  setTimeout(() => abandon(`shutdown did not finish within KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS=${limitSeconds}`), limitSeconds * 1000);
  try {
    await kvd.stop();
  } catch (e) {
    console.error("kvdrive: shutdown failed:", e);
    abandon("shutdown failed");
  }
  // Stopped in time: still, rows whose final flush failed were not written (their clients were told).
  const r = abandonAll();
  if (r.unflushedRows > 0) {
    console.error(`kvdrive: shut down, but not everything was flushed: ${leftBehind(r)}`);
    process.exit(1);
  }
  const queued = Object.values(r.repairQueue).reduce((n, k) => n + k, 0);
  if (queued > 0) console.log(`kvdrive: shut down; the repair queue holds ${queued} keys, replayed at the next start`);
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
