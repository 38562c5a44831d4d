// Versions: a microsecond timestamp plus a random nonce, compared as a pair. A hybrid logical clock keeps
// them strictly increasing within the process even when the wall clock steps back.
import type { Clock } from "../clock.ts";

export interface Version {
  /** Microseconds since the epoch (fits a double exactly until the year 2255). */
  ts: number;
  /** Random 31-bit tie-breaker between writers that picked the same microsecond. */
  nonce: number;
}

export const ZERO_VERSION: Version = { ts: 0, nonce: 0 };

/** <0 when a is older than b, 0 when equal, >0 when newer. */
export function compareVersions(a: Version, b: Version): number {
  return a.ts !== b.ts ? a.ts - b.ts : a.nonce - b.nonce;
}

export const isNewer = (a: Version, b: Version) => compareVersions(a, b) > 0;

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
