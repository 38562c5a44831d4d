// Protocol codec hot paths (src/protocol): DataRow and Bind encode/decode, and splitting a stream of
// 100 DataRows into messages.
import { bench, do_not_optimize, group, summary } from "mitata";
import { requireModules, runMicro } from "../lib/micro.ts";

if (requireModules(["src/protocol/backend.ts", "src/protocol/frontend.ts", "src/protocol/frames.ts"])) {
  const { decodeDataRow, encodeDataRow, encodeRowDescription, decodeRowDescription } = await import("../../src/protocol/backend.ts");
  const { decodeBind, encodeBind, encodeQuery, decodeQuery } = await import("../../src/protocol/frontend.ts");
  const { createFrames } = await import("../../src/protocol/frames.ts");
  const enc = new TextEncoder();
  const row = [enc.encode("42"), enc.encode("x".repeat(84)), null, enc.encode("2026-11-28 20:00:00+00")];
  const rowMsg = encodeDataRow(row);
  const rowBody = rowMsg.subarray(5);
  const bind = { portal: "", statement: "s1", paramFormats: [0], params: [enc.encode("12345")], resultFormats: [1] };
  const bindBody = encodeBind(bind).subarray(5);
  const fields = ["aid", "bid", "abalance", "filler"].map((name, i) => ({ name, tableOid: 16384, column: i + 1, typeOid: 23, typeSize: 4, typeModifier: -1, format: 0 }));
  const rdBody = encodeRowDescription(fields as never).subarray(5);
  const stream = new Uint8Array(rowMsg.length * 100);
  for (let i = 0; i < 100; i++) stream.set(rowMsg, i * rowMsg.length);
  const frames = createFrames(64 * 1024 * 1024);
  const query = encodeQuery("SELECT abalance FROM pgbench_accounts WHERE aid = 12345").subarray(5);

  summary(() => {
    group("backend messages", () => {
      bench("DataRow encode (4 columns)", () => do_not_optimize(encodeDataRow(row)));
      bench("DataRow decode (4 columns)", () => do_not_optimize(decodeDataRow(rowBody)));
      bench("RowDescription decode (4 fields)", () => do_not_optimize(decodeRowDescription(rdBody)));
    });
    group("frontend messages", () => {
      bench("Bind encode (1 param)", () => do_not_optimize(encodeBind(bind)));
      bench("Bind decode (1 param)", () => do_not_optimize(decodeBind(bindBody)));
      bench("Query decode", () => do_not_optimize(decodeQuery(query)));
    });
  });
  group("framing", () => {
    bench("split 100 DataRows from one chunk", () => {
      let n = 0;
      frames.push(stream, () => void n++);
      return do_not_optimize(n);
    });
  });
  await runMicro();
}
