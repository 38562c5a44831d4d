// Child processes for benchmarks: started on free ports, sampled for RSS, always stopped.
import fs from "node:fs";

export interface Child {
  proc: ReturnType<typeof Bun.spawn>;
  output(): string;
  stop(): Promise<number>;
}

const live = new Set<Child>();

/** Every child still running: the runner stops them on SIGINT so nothing is left behind. */
export const liveChildren = () => [...live];

/** Spawns a command and waits until its stdout contains `readyText`. */
export async function spawnUntil(cmd: string[], env: Record<string, string>, readyText: string, timeoutMs = 60_000): Promise<Child> {
  const proc = Bun.spawn(cmd, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", cwd: new URL("../..", import.meta.url).pathname });
  let out = "";
  let err = "";
  const reader = proc.stdout.getReader();
  const dec = new TextDecoder();
  (async () => {
    for await (const chunk of proc.stderr) err = (err + dec.decode(chunk)).slice(-4000);
  })();
  const deadline = Date.now() + timeoutMs;
  while (!out.includes(readyText)) {
    const r = await Promise.race([reader.read(), Bun.sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
    if (!r || r.done) {
      proc.kill("SIGKILL");
      await proc.exited;
      throw new Error(`${cmd.join(" ")} did not become ready: ${out.slice(-1000)}${err}`);
    }
    out += dec.decode(r.value);
  }
  (async () => {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      out = (out + dec.decode(r.value)).slice(-100_000);
    }
  })();
  const child: Child = {
    proc,
    output: () => out,
    async stop() {
      live.delete(child);
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
      const code = await proc.exited;
      clearTimeout(t);
      return code;
    },
  };
  live.add(child);
  return child;
}

export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS every 100 ms until stopped. */
export function sampleRss(pid: number): { stop(): number; peak(): number } {
  let peak = rssBytes(pid);
  const t = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 100);
  return {
    stop() {
      clearInterval(t);
      return peak;
    },
    peak: () => peak,
  };
}
