// `bun run kvdrive <command>`: operations on the storage of a kvdrive deployment, online.
//   rebalance                                   move the keys whose shard changed after adding a cluster
//   backfill --to replica|primary [--namespace ID]   copy every entry into a (new) backend
//   workerd-config, dev                         a Worker in workerd with env.KV / env.HYPERDRIVE served by kvdrive
// Both show a progress bar, can be stopped with Ctrl-C and resumed by running them again, and use conditional
// writes, so they are safe next to live traffic. The clusters are DATABASE_URL's, or, without it, those of
// the kvdrive running on this data dir (its storage.json).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { systemClock } from "./clock.ts";
import { loadConfig, redact, type Config } from "./config.ts";
import { ConfigError, UsageError } from "./errors.ts";
import { backfill } from "./gateway/backfill.ts";
import { createRegistry } from "./metrics/registry.ts";
import { openStorage } from "./storage/open.ts";
import { rebalance } from "./storage/rebalance.ts";
import { runWorkerdCommand, WORKERD_USAGE } from "./workerd/commands.ts";
import { startKvdrive } from "./main.ts";

const USAGE = `usage: bun run kvdrive <command>

commands:
  rebalance                         after adding a Postgres cluster to DATABASE_URL, move the keys whose
                                    owner changed (about 1/N of them) to it; resumable
  backfill --to replica|primary [--namespace ID]
                                    copy every entry into that backend with conditional writes; resumable
${WORKERD_USAGE}
  help                              this text

The clusters are DATABASE_URL's; without it, those of the kvdrive running on KVDRIVE_DATA_DIR.`;

interface ParsedArgs {
  command: string;
  flags: Record<string, string>;
}

function parseArgs(argv: string[]): ParsedArgs {
  const [command = "help", ...rest] = argv;
  const flags: Record<string, string> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
    const value = m[2] ?? rest[++i];
    if (value === undefined) throw new UsageError(`--${m[1]} needs a value`);
    flags[m[1]!] = value;
  }
  return { command, flags };
}

/** DATABASE_URL, else the URLs the running kvdrive wrote to its data dir. */
function storageUrls(config: Config): string[] {
  if (config.databaseUrl.length) return config.databaseUrl;
  const file = path.join(config.dataDir, "storage.json");
  if (!existsSync(file)) throw new ConfigError(`DATABASE_URL is not set and ${file} does not exist: start kvdrive first (bun start) or set DATABASE_URL`);
  return (JSON.parse(readFileSync(file, "utf8")) as { urls: string[] }).urls;
}

/** One line, redrawn in place on a terminal, printed every 10% otherwise. */
function progressBar(label: string, out: { write(s: string): unknown; isTTY?: boolean } = process.stderr) {
  const started = performance.now();
  let lastTenth = -1;
  return (done: number, total: number, extra = "") => {
    const share = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30;
    const filled = Math.round(share * width);
    const secs = ((performance.now() - started) / 1000).toFixed(0);
    const line = `${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}% ${done.toLocaleString("en-US")}/${total.toLocaleString("en-US")} ${extra} ${secs}s`;
    if (out.isTTY) out.write(`\r${line}`);
    else if (Math.floor(share * 10) !== lastTenth) {
      lastTenth = Math.floor(share * 10);
      out.write(line + "\n");
    }
  };
}

async function runCli(argv: string[], env: Record<string, string | undefined> = process.env): Promise<number> {
  if (argv[0] === "workerd-config" || argv[0] === "dev") return runWorkerdCommand(argv, env, startKvdrive);
  const { command, flags } = parseArgs(argv);
  if (command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return 0;
  }
  if (command !== "rebalance" && command !== "backfill") throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const config = loadConfig({}, env);
  const urls = storageUrls(config);
  let stop = false;
  const onSignal = () => {
    stop = true;
    console.error("\nstopping after this page; run the command again to resume");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const storage = await openStorage({ config, urls, metrics: createRegistry(), clock: systemClock, background: false });
  try {
    if (command === "rebalance") {
      for (const u of storage.primary.shards) console.error(`cluster ${u.id}: ${redact(u.url)}`);
      if (!storage.primary.previous()) console.error("the ring is up to date: walking the clusters for stray copies anyway");
      const bar = progressBar("rebalance");
      const res = await rebalance(storage.primary, {
        checkpointFile: path.join(config.dataDir, "rebalance.json"),
        onProgress: (p) => bar(p.scanned, p.total, `moved ${p.moved.toLocaleString("en-US")}`),
        shouldStop: () => stop,
      });
      console.error(`\nrebalance ${res.complete ? "complete" : "stopped"}: moved ${res.moved} of ${res.scanned} entries (${res.scanned ? ((res.moved / res.scanned) * 100).toFixed(1) : "0"}%)`);
      return res.complete ? 0 : 3;
    }
    const to = flags.to;
    if (to !== "replica" && to !== "primary") throw new UsageError("backfill needs --to replica or --to primary");
    if (!storage.replica) throw new ConfigError("backfill needs a second backend: set KVDRIVE_REPLICA_S3_BUCKET or KVDRIVE_REPLICA_DATABASE_URL");
    const [from, target] = to === "replica" ? [storage.primaryData, storage.replica] : [storage.replica, storage.primaryData];
    const total = to === "replica" ? await storage.primary.countEntries(flags.namespace) : 0;
    const bar = progressBar(`backfill to ${to}`);
    const res = await backfill({
      from, to: target, namespace: flags.namespace, total,
      checkpointFile: path.join(config.dataDir, `backfill-${to}${flags.namespace ? "-" + flags.namespace : ""}.json`),
      onProgress: (p) => bar(p.copied + p.skipped, p.total, `copied ${p.copied.toLocaleString("en-US")}`),
      shouldStop: () => stop,
    });
    console.error(`\nbackfill ${res.complete ? "complete" : "stopped"}: copied ${res.copied}, already there ${res.skipped}`);
    return res.complete ? 0 : 3;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await storage.close();
  }
}

if (import.meta.main) {
  try {
    process.exit(await runCli(process.argv.slice(2)));
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`kvdrive: ${e.message}\n\n${USAGE}`);
      process.exit(2);
    }
    if (e instanceof ConfigError) {
      console.error(`kvdrive: configuration error: ${e.message}`);
      process.exit(2);
    }
    console.error("kvdrive:", e);
    process.exit(1);
  }
}
