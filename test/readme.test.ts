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
