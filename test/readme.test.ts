// README's configuration table is the settings table of src/config.ts, so the two cannot drift.
// On a mismatch, `bun run readme:config` prints the table to paste.
import { expect, test } from "bun:test";
import { settingsTable } from "../src/config.ts";

test("README's configuration table equals settingsTable()", async () => {
  const readme = await Bun.file(new URL("../README.md", import.meta.url)).text();
  const section = readme.slice(readme.indexOf("\n## Configuration\n"));
  const start = section.indexOf("| variable | default | meaning |");
  expect(start).toBeGreaterThan(0);
  const lines = section.slice(start).split("\n");
  const table = lines.slice(0, lines.findIndex((l) => !l.startsWith("|"))).join("\n");
  expect(table).toBe(settingsTable());
});

test("every source file README.md and ARCHITECTURE.md name exists", async () => {
  const root = new URL("../", import.meta.url);
  const missing: string[] = [];
  for (const doc of ["README.md", "ARCHITECTURE.md"]) {
    const text = await Bun.file(new URL(doc, root)).text();
    // Whole paths (src/…) and, in ARCHITECTURE.md, paths under a src/ folder (gateway/batcher.ts).
    for (const m of text.matchAll(/(?<![\w/.-])((?:src|pool|gateway|storage|kv|http|protocol|workerd|metrics|embedded)\/[\w/.-]+\.ts)\b/g)) {
      const p = m[1]!.startsWith("src/") ? m[1]! : `src/${m[1]}`;
      if (!(await Bun.file(new URL(p, root)).exists())) missing.push(`${doc}: ${m[1]}`);
    }
  }
  expect(missing).toEqual([]);
});
