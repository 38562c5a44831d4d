// Charts as SVG through Vega-Lite (compiled) and Vega (rendered headless): throughput bars and
// p50/p99/p99.9 latency bars for every measured row.
import * as vega from "vega";
import * as vl from "vega-lite";
import type { ScenarioResult } from "./result.ts";

export async function renderChart(r: ScenarioResult): Promise<string | null> {
  const rows = r.rows.filter((x) => (x.status === "ok" || x.status === "errors") && x.rps !== undefined);
  if (rows.length === 0) return null;
  // Groups get a short tag, explained in the subtitle, so labels stay readable.
  const groups = [...new Set(rows.map((x) => x.group ?? ""))];
  const tag = (g: string | undefined) => (groups.length > 1 ? `[${groups.indexOf(g ?? "") + 1}] ` : "");
  const name = (x: (typeof rows)[number]) => `${tag(x.group)}${x.label}${x.status === "errors" ? " (ERRORS)" : ""}`;
  const legend = groups.length > 1 ? groups.map((g, i) => `[${i + 1}] ${g || "—"}`) : [];
  const order = rows.map(name);
  const tput = rows.map((x) => ({ target: name(x), value: x.rowsPerSec ?? x.rps!, unit: x.rowsPerSec !== undefined ? "rows/s" : "req/s" }));
  const lat = rows.flatMap((x) =>
    (["p50", "p99", "p999"] as const).filter((p) => Number.isFinite(x[p])).map((p) => ({ target: name(x), percentile: p === "p999" ? "p99.9" : p, ms: Math.max(x[p]!, 0.01) })),
  );
  const y = { field: "target", type: "nominal", sort: order, title: null, axis: { labelLimit: 640 } } as const;
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: r.title, subtitle: ["higher throughput and shorter latency bars are better; the latency axis is logarithmic", ...legend] },
    vconcat: [
      {
        data: { values: tput },
        width: 520,
        mark: { type: "bar", tooltip: true },
        encoding: { y, x: { field: "value", type: "quantitative", title: "throughput (req/s, or rows/s for writes)" }, color: { field: "unit", type: "nominal", title: null } },
      },
      {
        data: { values: lat },
        width: 520,
        mark: { type: "bar", tooltip: true },
        encoding: {
          y,
          yOffset: { field: "percentile", sort: ["p50", "p99", "p99.9"] },
          x: { field: "ms", type: "quantitative", scale: { type: "log" }, title: "latency (ms, log scale)" },
          color: { field: "percentile", type: "nominal", sort: ["p50", "p99", "p99.9"] },
        },
      },
    ],
    resolve: { scale: { color: "independent" } },
  };
  const compiled = vl.compile(spec as unknown as vl.TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}
