// The periodic janitor: removes expired entries and tombstones older than the grace period. Reads already hide
// both, so purging is only about space; a round that fails is simply tried again at the next tick.
import type { Clock } from "../clock.ts";
import type { Registry } from "../metrics/registry.ts";
import type { Backend } from "../storage/backend.ts";

export interface PurgerOptions {
  backend: Pick<Backend, "purge">;
  clock: Clock;
  intervalSeconds: number;
  /** Tombstones younger than this stay, so a late older write cannot resurrect a deleted key. */
  tombstoneGraceSeconds: number;
  metrics: Registry;
}

export interface Purger {
  /** One round now; resolves to the rows removed. Rounds never overlap. */
  runOnce(): Promise<number>;
  stop(): Promise<void>;
}

export function startPurger(opts: PurgerOptions): Purger {
  const purged = opts.metrics.counter("kvdrive_purged_total", "Expired entries and old tombstones removed");
  const failures = opts.metrics.counter("kvdrive_purge_errors_total", "Purge rounds that failed");
  let running: Promise<number> | undefined;

  function runOnce(): Promise<number> {
    running ??= (async () => {
      try {
        const now = opts.clock.now();
        const removed = await opts.backend.purge(Math.floor(now / 1000), (now - opts.tombstoneGraceSeconds * 1000) * 1000);
        purged.inc(undefined, removed);
        return removed;
      } finally {
        running = undefined;
      }
    })();
    return running;
  }

  const timer = setInterval(() => {
    runOnce().catch(() => failures.inc());
  }, opts.intervalSeconds * 1000);
  timer.unref?.();

  return {
    runOnce,
    async stop() {
      clearInterval(timer);
      await running?.catch(() => {});
    },
  };
}
