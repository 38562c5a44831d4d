// What statement classification costs on the pooler's hot path: a cold libpg-query parse of a new statement
// text versus the memoized lookup every repeated statement gets (src/pool/cache/classify.ts).
import { bench, do_not_optimize, group, summary } from "mitata";
import { requireModules, runMicro } from "../lib/micro.ts";

if (requireModules(["src/pool/cache/classify.ts"])) {
  const { classify } = await import("../../src/pool/cache/classify.ts");
  const { parserReady } = await import("../../src/pool/cache/parser.ts");
  await parserReady();
  const hot = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
  classify(hot);
  let n = 0;
  summary(() => {
    group("classify", () => {
      // A unique comment defeats the memo, so every call is a real parse of a new text.
      bench("cold parse (new text each call)", () => do_not_optimize(classify(`${hot} /* ${n++} */`)));
      bench("memoized lookup (same text)", () => do_not_optimize(classify(hot)));
    });
  });
  await runMicro();
}
