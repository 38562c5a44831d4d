// The Workers runtime as kvdrive uses it: the workerd binary from the `workerd` npm package, a Worker bundled
// for it with Bun.build, and `workerd serve` run on a config file.
import fs from "node:fs";
import path from "node:path";

export interface WorkerdBinary {
  path: string;
  /** The newest compatibility date this binary supports. */
  compatibilityDate: string;
}

/** The `workerd` package's binary; a clear error when it is not installed (it is a devDependency). */
export async function findWorkerd(): Promise<WorkerdBinary> {
  let mod: { default: string; compatibilityDate: string };
  try {
    // A literal specifier, loaded only when a workerd command runs (rebalance and backfill work without the
    // package); the package ships no type declarations.
    mod = require("workerd") as { default: string; compatibilityDate: string };
  } catch (e) {
    throw new Error(`the workerd runtime is not installed (run \`bun install\`; it is the npm package "workerd"): ${(e as Error).message}`);
  }
  if (!fs.existsSync(mod.default)) throw new Error(`the workerd binary ${mod.default} is missing: run \`bun install\``);
  return { path: mod.default, compatibilityDate: mod.compatibilityDate };
}

/**
 * Bundles a Worker (TypeScript or JavaScript) into one ES module for workerd: the `workerd` export condition
 * (postgres.js ships a build for it), with `cloudflare:*` and `node:*` left to the runtime (nodejs_compat).
 */
export async function bundleWorker(entry: string, outDir: string): Promise<string> {
  fs.mkdirSync(outDir, { recursive: true });
  const result = await Bun.build({
    entrypoints: [entry],
    outdir: outDir,
    target: "browser",
    format: "esm",
    conditions: ["workerd", "worker"],
    external: ["cloudflare:*", "node:*"],
    naming: "worker.js",
  });
  if (!result.success) throw new Error(`bundling ${entry} failed:\n${result.logs.map((l) => String(l)).join("\n")}`);
  return path.join(outDir, "worker.js");
}

export interface WorkerdProcess {
  proc: ReturnType<typeof Bun.spawn>;
  /** Resolves when workerd listens on the Worker's socket; rejects if it exits first. */
  ready: Promise<void>;
  stop(): Promise<void>;
}

/** Runs `workerd serve <config>`; `ready` waits for the Worker's port to accept connections. */
export function serveWorkerd(bin: WorkerdBinary, configFile: string, port: number, opts: { stdio?: "inherit" | "pipe"; host?: string } = {}): WorkerdProcess {
  const host = opts.host ?? "127.0.0.1";
  const proc = Bun.spawn([bin.path, "serve", configFile], {
    cwd: path.dirname(configFile),
    stdout: opts.stdio ?? "inherit",
    stderr: opts.stdio ?? "inherit",
  });
  const ready = (async () => {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`workerd exited (${proc.exitCode ?? proc.signalCode}) before it listened on port ${port}`);
      try {
        const s = await Bun.connect({ hostname: host.replace(/^\[|\]$/g, ""), port, socket: { data() {} } });
        s.end();
        return;
      } catch {
        await Bun.sleep(50);
      }
    }
    throw new Error(`workerd did not listen on port ${port} within 30 s`);
  })();
  return {
    proc,
    ready,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}
