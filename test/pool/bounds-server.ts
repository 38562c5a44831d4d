// A pooler in a process of its own, for the resource tests: they read its RSS from /proc while they flood it.
// argv: origin URL, then a JSON object of config overrides. Prints "port <n>" once listening; stops on SIGTERM.
import { loadConfig } from "../../src/config.ts";
import { systemClock } from "../../src/clock.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { startPooler } from "../../src/pool/pooler.ts";

const [originUrl, json] = process.argv.slice(2);
const config = loadConfig({ pgPort: 0, host: "127.0.0.1", ...JSON.parse(json ?? "{}") }, {});
const pooler = await startPooler({ config, originUrl: originUrl!, clock: systemClock, metrics: createRegistry(), log: (l) => console.error(l) });
// SIGUSR2: a full garbage collection, then "gc" on stdout, so a test reads what is retained, not what awaits collection.
process.on("SIGUSR2", () => {
  Bun.gc(true);
  console.log("gc");
});
process.on("SIGTERM", () => void pooler.stop().finally(() => process.exit(0)));
// Announced only after the handlers are surely in place (a SIGUSR2 before them would end the process).
await Bun.sleep(100);
console.log(`port ${pooler.port}`);
