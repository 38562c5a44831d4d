// A latency recorder for in-process closed loops (postgres.js, Bun.SQL, a Redis client): `concurrency`
// loops each await one operation at a time; every completed operation's latency is kept.
import { finish, percentile, type Row } from "./result.ts";

export interface LoopOptions {
  concurrency: number;
  durationSec: number;
  /** Rows carried by one operation, for rows/s. */
  rowsPerOp?: number;
  group?: string;
}

export async function closedLoop(label: string, o: LoopOptions, op: (i: number) => Promise<unknown>): Promise<Row> {
  let lat = new Float64Array(1 << 16);
  let n = 0;
  let errors = 0;
  let seq = 0;
  let firstError: unknown;
  const start = performance.now();
  const end = start + o.durationSec * 1000;
  await Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await op(seq++);
          if (n === lat.length) {
            const bigger = new Float64Array(lat.length * 2);
            bigger.set(lat);
            lat = bigger;
          }
          lat[n++] = performance.now() - t;
        } catch (e) {
          errors++;
          firstError ??= e;
        }
      }
    }),
  );
  const secs = (performance.now() - start) / 1000;
  const sorted = lat.subarray(0, n).sort();
  const row = finish({
    label,
    group: o.group,
    connections: o.concurrency,
    durationSec: o.durationSec,
    total: n,
    rps: n / secs,
    rowsPerSec: o.rowsPerOp ? (n * o.rowsPerOp) / secs : undefined,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    errors,
    non2xx: 0,
  });
  if (firstError) row.note = `first error: ${String(firstError instanceof Error ? firstError.message : firstError).slice(0, 160)}`;
  return row;
}
