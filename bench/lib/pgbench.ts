// pgbench as a load generator: its summary for tps and failures, and its per-transaction log (-l) for
// latency percentiles. Warm-up runs are separate invocations whose results are discarded.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { finish, percentile, type Row } from "./result.ts";

export interface PgbenchTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  db: string;
}

export interface PgbenchRun {
  clients: number;
  durationSec: number;
  mode: "simple" | "extended" | "prepared";
  /** -S: the select-only script; otherwise TPC-B. */
  selectOnly: boolean;
  /** -C: a new connection for every transaction. */
  connectEach?: boolean;
  /** -t: this many transactions per client instead of -T durationSec. */
  transactions?: number;
  /** A custom script (-f) instead of the built-in ones; `name` labels it in tables. */
  script?: { name: string; text: string };
}

export const pgbenchArgs = (r: PgbenchRun) => [`-c${r.clients}`, "-j2", r.transactions ? `-t${r.transactions}` : `-T${r.durationSec}`, `-M${r.mode}`, ...(r.script ? [`-f ${r.script.name}`] : r.selectOnly ? ["-S"] : []), ...(r.connectEach ? ["-C"] : [])];

const env = (t: PgbenchTarget) => ({ ...process.env, PGPASSWORD: t.password, PGHOST: t.host, PGPORT: String(t.port), PGUSER: t.user, PGDATABASE: t.db, PGSSLMODE: "disable" });

export async function pgbenchInit(t: PgbenchTarget, scale = 1): Promise<void> {
  const proc = Bun.spawn(["pgbench", "-i", "-q", `-s${scale}`], { env: env(t), stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`pgbench -i failed (${code}): ${err.slice(-400)}`);
}

export async function pgbench(label: string, t: PgbenchTarget, r: PgbenchRun, group?: string): Promise<Row> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-pgbench-"));
  try {
    const args = ["pgbench", "-n", ...pgbenchArgs(r).filter((a) => !a.startsWith("-f ")), "-l", `--log-prefix=${path.join(dir, "tx")}`];
    if (r.script) {
      fs.writeFileSync(path.join(dir, "script.sql"), r.script.text);
      args.push("-f", path.join(dir, "script.sql"));
    }
    // The client's own CPU per transaction (SCRAM's PBKDF2 runs in libpq): what bounds -C on a shared machine.
    const time = fs.existsSync("/usr/bin/time") ? ["/usr/bin/time", "-f", "PGBENCH_CPU %U %S"] : [];
    const proc = Bun.spawn([...time, ...args], { env: env(t), stdout: "pipe", stderr: "pipe", cwd: dir });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    const text = out + "\n" + err;
    const tps = Number(/tps = ([\d.]+)/.exec(text)?.[1] ?? NaN);
    const processed = Number(/number of transactions actually processed: (\d+)/.exec(text)?.[1] ?? 0);
    const failed = Number(/number of failed transactions: (\d+)/.exec(text)?.[1] ?? 0);
    // pgbench 15 words it "client 3 script 0 aborted in command 1 …" and exits non-zero when any client aborted.
    const aborted = (text.match(/client \d+ (script \d+ )?aborted/g) ?? []).length;
    const lat: number[] = [];
    for (const f of fs.readdirSync(dir)) {
      if (!f.startsWith("tx")) continue;
      for (const line of fs.readFileSync(path.join(dir, f), "utf8").split("\n")) {
        const us = Number(line.split(" ")[2]);
        if (line && Number.isFinite(us)) lat.push(us / 1000);
      }
    }
    lat.sort((a, b) => a - b);
    const row = finish({
      label,
      group,
      connections: r.clients,
      durationSec: r.durationSec,
      total: processed,
      rps: tps,
      p50: percentile(lat, 0.5),
      p99: percentile(lat, 0.99),
      p999: percentile(lat, 0.999),
      errors: failed + aborted + (code !== 0 && aborted === 0 ? 1 : 0),
      non2xx: 0,
    });
    const cpu = /PGBENCH_CPU ([\d.]+) ([\d.]+)/.exec(err);
    if (cpu && processed > 0) row.clientCpuMsPerTx = ((Number(cpu[1]) + Number(cpu[2])) * 1000) / processed;
    const firstError = /(ERROR|FATAL):? [^\n]*/.exec(err)?.[0] ?? /error:? [^\n]*/.exec(err)?.[0];
    if (row.status !== "ok" && firstError) row.note = firstError.slice(0, 200);
    return row;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
