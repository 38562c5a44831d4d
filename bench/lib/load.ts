// Load generators: autocannon in its own Node process (so it never shares an event loop with the server),
// and a closed-loop in-process driver for direct database baselines.

export interface LoadResult {
  label: string;
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
  total: number;
  durationSec: number;
}

export interface HttpLoad {
  url: string;
  connections: number;
  durationSec: number;
  method?: string;
  body?: string;
  headers?: Record<string, string>;
  /** Append a unique number to the URL's path on every request (fresh keys for writes). */
  uniquePath?: boolean;
}

const autocannonBin = new URL("../../node_modules/autocannon/autocannon.js", import.meta.url).pathname;
const uniqueBin = new URL("./autocannon-unique.cjs", import.meta.url).pathname;

export async function autocannon(label: string, o: HttpLoad): Promise<LoadResult> {
  const args = [autocannonBin, "-j", "-c", String(o.connections), "-d", String(o.durationSec), "-m", o.method ?? "GET"];
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push("-H", `${k}=${v}`);
  if (o.body !== undefined) args.push("-b", o.body);
  args.push(o.url);
  if (o.uniquePath) args.splice(0, args.length, uniqueBin, JSON.stringify({ ...o, method: o.method ?? "GET" }));
  const proc = Bun.spawn(["node", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  if (code !== 0) throw new Error(`autocannon failed (${code}): ${await new Response(proc.stderr).text()}`);
  const j = JSON.parse(out);
  return {
    label,
    requestsPerSec: j.requests.average,
    p50Ms: j.latency.p50,
    p99Ms: j.latency.p99,
    errors: j.errors + j.timeouts,
    non2xx: j.non2xx,
    total: j.requests.total,
    durationSec: o.durationSec,
  };
}

/** Runs `op` from `concurrency` closed loops for durationSec, recording each latency. */
export async function closedLoop(label: string, concurrency: number, durationSec: number, op: (i: number) => Promise<unknown>): Promise<LoadResult> {
  const lat: number[] = [];
  let errors = 0;
  let n = 0;
  const end = performance.now() + durationSec * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await op(n++);
          lat.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  lat.sort((a, b) => a - b);
  const pct = (p: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? 0;
  return { label, requestsPerSec: lat.length / durationSec, p50Ms: pct(0.5), p99Ms: pct(0.99), errors, non2xx: 0, total: lat.length, durationSec };
}
