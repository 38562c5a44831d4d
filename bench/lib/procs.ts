// Child processes for benchmarks: started on free ports, sampled for RSS, always stopped.
import fs from "node:fs";

export interface Child {
  proc: ReturnType<typeof Bun.spawn>;
  output(): string;
  stop(): Promise<number>;
}

/** Spawns a command and waits until its stdout contains `readyText`. */
export async function spawnUntil(cmd: string[], env: Record<string, string>, readyText: string, timeoutMs = 60_000): Promise<Child> {
  const proc = Bun.spawn(cmd, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", cwd: new URL("../..", import.meta.url).pathname });
  let out = "";
  const reader = proc.stdout.getReader();
  const dec = new TextDecoder();
  const deadline = Date.now() + timeoutMs;
  while (!out.includes(readyText)) {
    const r = await Promise.race([reader.read(), Bun.sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
    if (!r || r.done) {
      proc.kill("SIGKILL");
      throw new Error(`${cmd.join(" ")} did not become ready: ${out}${await new Response(proc.stderr).text()}`);
    }
    out += dec.decode(r.value);
  }
  (async () => {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      out += dec.decode(r.value);
    }
  })();
  return {
    proc,
    output: () => out,
    async stop() {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
      const code = await proc.exited;
      clearTimeout(t);
      return code;
    },
  };
}

export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS every 100 ms until stopped; returns the peak. */
export function sampleRss(pid: number): { stop(): number } {
  let peak = rssBytes(pid);
  const t = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 100);
  return {
    stop() {
      clearInterval(t);
      return peak;
    },
  };
}
