// What a result was measured on and with: the machine, the tools, and the git commit of the code.
import { execSync } from "node:child_process";
import os from "node:os";

const sh = (cmd: string) => {
  try {
    return execSync(cmd, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "";
  }
};

export interface Machine {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  bun: string;
  node: string;
  postgres: string;
  commit: string;
  /** True when tracked files differ from the commit: the figures are then not from committed code. */
  dirty: boolean;
  /** The tracked files that differ, so a reader can judge whether they matter. */
  dirtyFiles: string[];
}

export function machine(): Machine {
  // Not trimmed: porcelain lines start with a two-letter status that may begin with a space.
  let porcelain = "";
  try {
    porcelain = execSync("git status --porcelain --untracked-files=no -- src bench package.json", { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {}
  const dirtyFiles = porcelain.split("\n").filter(Boolean).map((l) => l.slice(3));
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.platform()} ${os.release()}`,
    bun: Bun.version,
    node: sh("node --version") || "not installed",
    postgres: sh("pgbench --version") || "pgbench not installed",
    commit: sh("git rev-parse --short HEAD") || "unknown",
    dirty: dirtyFiles.length > 0,
    dirtyFiles,
  };
}

/** One line: the machine, the tools, the commit, and the source files (not bench results) changed since it. */
export function describeMachine(m: Machine): string {
  const changed = m.dirtyFiles.filter((f) => !f.startsWith("bench/results/"));
  const dirty = changed.length === 0 ? "" : changed.length <= 3 ? ` with uncommitted changes to ${changed.join(", ")}` : ` with uncommitted changes to ${changed.length} files`;
  return `${m.nproc} × ${m.cpu}, ${m.memoryGiB} GiB RAM, ${m.kernel}; Bun ${m.bun}, Node ${m.node}, ${m.postgres}; commit ${m.commit}${dirty}`;
}
