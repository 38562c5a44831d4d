// The version clock: a microsecond timestamp plus a random nonce (storage/entry.ts's Version). A hybrid logical
// clock keeps them strictly increasing within the process even when the wall clock steps back.
import type { Clock } from "../clock.ts";
import type { Version } from "../storage/entry.ts";

export interface VersionClock {
  next(): Version;
  /** Moves the logical clock past a version seen elsewhere, so later local writes order after it. */
  observe(v: Version): void;
}

export function createVersionClock(clock: Clock, random: () => number = Math.random): VersionClock {
  let last = 0;
  return {
    next() {
      const wall = Math.floor(clock.now() * 1000);
      last = wall > last ? wall : last + 1;
      return { ts: last, nonce: Math.floor(random() * 0x7fffffff) };
    },
    observe(v) {
      if (v.ts > last) last = v.ts;
    },
  };
}
