// `bun run kvdrive workerd-config` and `bun run kvdrive dev`: a Worker in workerd with env.KV and env.HYPERDRIVE
// served by the kvdrive running on this data dir (dev starts one in process when none is running).
import fs from "node:fs";
import path from "node:path";
import { loadConfig, type Config } from "../config.ts";
import { ConfigError, UsageError } from "../errors.ts";
import { workerdConfig, validateBindingName, type HyperdriveBinding, type KvBinding } from "./capnp.ts";
import { findRunning, requireRunning, type RunningKvdrive } from "./instance.ts";
import { connectHost } from "./listener.ts";
import { bundleWorker, findWorkerd, serveWorkerd, type WorkerdProcess } from "./runtime.ts";

export const WORKERD_USAGE = `  workerd-config <worker.js> [--kv NAME=NAMESPACE_ID_OR_TITLE]... [--hyperdrive NAME=DATABASE]...
                 [--create] [--account ID] [--port 8790] [--out FILE]
                                    print (or write to FILE) a workerd config for the Worker module with
                                    those bindings served by the running kvdrive, token and password included
  dev <worker.ts|js> [--port 8790] [--kv …]... [--hyperdrive …]... [--create] [--account ID]
                                    bundle the Worker, run it in workerd next to the running kvdrive (or
                                    one started here); Ctrl-C stops both. Without bindings: KV=dev
                                    (created) and HYPERDRIVE=postgres`;

interface WorkerdArgs {
  worker: string;
  kv: Array<{ name: string; ref: string }>;
  hyperdrive: HyperdriveBinding[];
  create: boolean;
  account: string;
  port: number;
  out?: string;
}

const DEFAULT_ACCOUNT = "local";

function parseWorkerdArgs(argv: string[]): WorkerdArgs {
  const out: WorkerdArgs = { worker: "", kv: [], hyperdrive: [], create: false, account: DEFAULT_ACCOUNT, port: 8790 };
  const pair = (flag: string, v: string, fallback?: string) => {
    const eq = v.indexOf("=");
    if (eq < 0 && fallback === undefined) throw new UsageError(`--${flag} takes NAME=VALUE, got ${JSON.stringify(v)}`);
    const name = eq < 0 ? v : v.slice(0, eq);
    try {
      validateBindingName(name);
    } catch (e) {
      throw new UsageError(`--${flag}: ${(e as Error).message}`);
    }
    return { name, value: eq < 0 ? fallback! : v.slice(eq + 1) };
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) {
      if (out.worker) throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
      out.worker = a;
      continue;
    }
    if (m[1] === "create") {
      out.create = true;
      continue;
    }
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new UsageError(`--${m[1]} needs a value`);
    switch (m[1]) {
      case "kv": {
        const { name, value } = pair("kv", v);
        if (!value) throw new UsageError(`--kv ${name}= needs a namespace id or title`);
        out.kv.push({ name, ref: value });
        break;
      }
      case "hyperdrive": {
        const { name, value } = pair("hyperdrive", v, "postgres");
        out.hyperdrive.push({ name, database: value || "postgres" });
        break;
      }
      case "account":
        out.account = v;
        break;
      case "port":
        if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new UsageError(`--port ${JSON.stringify(v)} is not a port number`);
        out.port = Number(v);
        break;
      case "out":
        out.out = v;
        break;
      default:
        throw new UsageError(`unknown option --${m[1]}`);
    }
  }
  if (!out.worker) throw new UsageError("name the Worker module, e.g. `bun run kvdrive dev worker.ts`");
  return out;
}

/** NAMESPACE_ID_OR_TITLE to a namespace id: an id the listener knows, else a title in the account (created with --create). */
async function resolveNamespace(k: RunningKvdrive, ref: string, account: string, create: boolean): Promise<string> {
  if (/^[0-9a-f]{32}$/.test(ref)) {
    const probe = await fetch(`http://${k.workerd}/?key_count_limit=1`, { headers: { authorization: `Bearer ${k.apiToken}`, "x-kvdrive-namespace": ref } });
    await probe.body?.cancel();
    if (probe.ok) return ref;
    if (probe.status !== 404) throw new ConfigError(`kvdrive answered ${probe.status} ${probe.statusText} for namespace ${ref}`);
  }
  const base = `${k.http}/client/v4/accounts/${encodeURIComponent(account)}/storage/kv/namespaces`;
  const headers = { authorization: `Bearer ${k.apiToken}`, "content-type": "application/json" };
  for (let page = 1; ; page++) {
    const res = await fetch(`${base}?per_page=100&page=${page}`, { headers });
    const body = (await res.json()) as { success: boolean; errors: Array<{ message: string }>; result: Array<{ id: string; title: string }> };
    if (!body.success) throw new ConfigError(`listing the namespaces of account ${JSON.stringify(account)} failed: ${body.errors[0]?.message}`);
    const found = body.result.find((n) => n.title === ref);
    if (found) return found.id;
    if (body.result.length < 100) break;
  }
  if (!create) throw new ConfigError(`no namespace with the id or title ${JSON.stringify(ref)} in account ${JSON.stringify(account)}: pass --create to create it, or --account to look elsewhere`);
  const res = await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: ref }) });
  const body = (await res.json()) as { success: boolean; errors: Array<{ message: string }>; result: { id: string } };
  if (!body.success) throw new ConfigError(`creating namespace ${JSON.stringify(ref)} failed: ${body.errors[0]?.message}`);
  return body.result.id;
}

/** The Worker's socket binds where kvdrive does (KVDRIVE_HOST, loopback by default), never wider by surprise. */
function listenAddress(host: string, port: number): string {
  if (host === "0.0.0.0" || host === "::" || host === "") return `*:${port}`;
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

async function configText(config: Config, k: RunningKvdrive, a: WorkerdArgs, modulePath: string, compatibilityDate: string): Promise<string> {
  const kv: KvBinding[] = [];
  for (const b of a.kv) kv.push({ name: b.name, namespaceId: await resolveNamespace(k, b.ref, a.account, a.create) });
  return workerdConfig({
    modulePath, listen: listenAddress(config.host, a.port), compatibilityDate, kv, hyperdrive: a.hyperdrive,
    kvAddress: k.workerd!, pgAddress: k.postgres, apiToken: k.apiToken, pgUser: k.pgUser, pgPassword: k.pgPassword,
  });
}

/** What `dev` needs of the process wiring (main.ts), handed in by cli.ts so workerd/ stays below main. */
export interface StartKvdrive {
  (opts: { config: Config; log: (line: string) => void }): Promise<{ stop(): Promise<void> }>;
}

export async function runWorkerdCommand(argv: string[], env: Record<string, string | undefined>, start: StartKvdrive): Promise<number> {
  const [command, ...rest] = argv;
  const args = parseWorkerdArgs(rest);
  const config = loadConfig({}, env);
  if (command === "workerd-config") return printConfig(config, args);
  return dev(config, args, start);
}

async function printConfig(config: Config, a: WorkerdArgs): Promise<number> {
  const k = requireRunning(config);
  const { compatibilityDate } = await findWorkerd();
  const dir = path.resolve(a.out ? path.dirname(a.out) : ".");
  const modulePath = path.relative(dir, path.resolve(a.worker)) || path.basename(a.worker);
  if (!fs.existsSync(a.worker)) throw new ConfigError(`the Worker module ${a.worker} does not exist`);
  const text = await configText(config, k, a, modulePath, compatibilityDate);
  if (a.out) {
    fs.writeFileSync(a.out, text, { mode: 0o600 });
    console.error(`wrote ${a.out}; run it with: npx workerd serve ${a.out}`);
  } else process.stdout.write(text);
  return 0;
}

async function dev(config: Config, a: WorkerdArgs, startKvdrive: StartKvdrive): Promise<number> {
  if (a.kv.length === 0 && a.hyperdrive.length === 0) {
    a.kv.push({ name: "KV", ref: "dev" });
    a.create = true;
    a.hyperdrive.push({ name: "HYPERDRIVE", database: "postgres" });
  }
  const bin = await findWorkerd();
  // Ctrl-C at any point: workerd first (it may be mid-request to kvdrive), then the kvdrive started here, exit 0.
  let signalled: string | null = null;
  let stopping: Promise<void> | null = null;
  let w: WorkerdProcess | null = null;
  let own: { stop(): Promise<void> } | null = null;
  const stopAll = () =>
    (stopping ??= (async () => {
      const what = [w && "workerd", own && "kvdrive"].filter(Boolean).join(" and ") || "nothing left to stop";
      console.error(`\nkvdrive dev: ${signalled ?? "workerd exited"}, stopping ${what}`);
      await w?.stop();
      await own?.stop();
      own = null;
    })());
  const onSignal = (signal: string) => {
    signalled ??= signal;
    // While kvdrive or workerd is still starting, the stop waits until start-up is over (below).
    if (w) void stopAll();
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  try {
    let k = findRunning(config);
    if (!k) {
      console.error(`kvdrive: none running on ${config.dataDir}, starting one`);
      own = await startKvdrive({ config, log: (l) => console.error(l) });
      k = requireRunning(config);
    }
    if (!k.workerd) throw new ConfigError("the running kvdrive has KVDRIVE_WORKERD_PORT=off: restart it with a port for the KV-binding listener");
    if (signalled) {
      await stopAll();
      return 0;
    }
    const outDir = path.join(config.dataDir, "dev");
    const modulePath = await bundleWorker(path.resolve(a.worker), outDir);
    const configFile = path.join(outDir, "config.capnp");
    fs.writeFileSync(configFile, await configText(config, k, a, path.basename(modulePath), bin.compatibilityDate), { mode: 0o600 });
    const host = connectHost(config.host);
    w = serveWorkerd(bin, configFile, a.port, { host });
    if (signalled) void stopAll();
    await w.ready;
    console.error(`kvdrive dev: Worker ${a.worker} on http://${host}:${a.port} (workerd pid ${w.proc.pid}; KV ${a.kv.map((b) => b.name).join(", ") || "-"}, Hyperdrive ${a.hyperdrive.map((b) => b.name).join(", ") || "-"})`);
    const code = await w.proc.exited;
    const asked = signalled !== null;
    if (!asked) console.error(`kvdrive dev: workerd exited with ${code}`);
    await stopAll();
    return asked || code === 0 ? 0 : 1;
  } catch (e) {
    if (signalled && w) {
      await stopAll();
      return 0;
    }
    await stopAll();
    throw e;
  }
}
