// Prometheus text-format metrics: counters, gauges and histograms with labels, rendered on GET /metrics.
// Each metric keeps at most maxSeriesPerMetric label sets: a label set past the bound is counted under the one
// label set {overflow="true"} and in kvdrive_metric_series_overflow_total, so no input can grow it for ever.

type Labels = Record<string, string | number>;

interface Series {
  render(): string[];
}

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');

function labelKey(labels: Labels | undefined): string {
  if (!labels) return "";
  const keys = Object.keys(labels);
  if (keys.length === 0) return "";
  keys.sort();
  return "{" + keys.map((k) => `${k}="${escapeLabel(String(labels[k]))}"`).join(",") + "}";
}

function withLabel(key: string, extra: string): string {
  return key ? key.slice(0, -1) + "," + extra + "}" : "{" + extra + "}";
}

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
  /** A handle bound to one label set, for hot paths: the label key is built once. */
  with(labels: Labels): { inc(by?: number): void };
}

export interface Gauge {
  set(value: number, labels?: Labels): void;
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}

export interface Histogram {
  observe(value: number, labels?: Labels): void;
  /** A handle bound to one label set, for hot paths: the label key is built once. */
  with(labels: Labels): { observe(value: number): void };
  /** Count and sum for one label set (tests and admin views). */
  snapshot(labels?: Labels): { count: number; sum: number };
}

export const LATENCY_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
export const SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 10000];

export interface Registry {
  counter(name: string, help: string): Counter;
  gauge(name: string, help: string, collect?: () => Array<[Labels | undefined, number]>): Gauge;
  histogram(name: string, help: string, buckets?: number[]): Histogram;
  render(): string;
}

export const OVERFLOW_KEY = '{overflow="true"}';

export function createRegistry(opts: { maxSeriesPerMetric?: number } = {}): Registry {
  const families = new Map<string, { help: string; type: string; series: Series }>();
  const maxSeries = opts.maxSeriesPerMetric ?? 1000;
  const overflowed = new Map<string, number>();

  /** The key a label set is stored under: itself while the metric has room, else the overflow key. */
  function admit(name: string, has: (k: string) => boolean, size: number, k: string): string {
    if (has(k) || size < maxSeries || k === OVERFLOW_KEY) return k;
    overflowed.set(name, (overflowed.get(name) ?? 0) + 1);
    return OVERFLOW_KEY;
  }

  function register<T extends Series>(name: string, help: string, type: string, make: () => T): T {
    const existing = families.get(name);
    if (existing) {
      if (existing.type !== type) throw new Error(`metric ${name} already registered as ${existing.type}`);
      return existing.series as T;
    }
    const series = make();
    families.set(name, { help, type, series });
    return series;
  }

  return {
    counter(name, help) {
      return register<Counter & Series>(name, help, "counter", () => {
        const values = new Map<string, number>();
        const key = (labels: Labels | undefined) => admit(name, (k) => values.has(k), values.size, labelKey(labels));
        return {
          inc(labels, by = 1) {
            const k = key(labels);
            values.set(k, (values.get(k) ?? 0) + by);
          },
          get: (labels) => values.get(labelKey(labels)) ?? 0,
          with(labels) {
            const k = key(labels);
            if (!values.has(k)) values.set(k, 0);
            return { inc: (by = 1) => void values.set(k, (values.get(k) ?? 0) + by) };
          },
          render: () => [...values].map(([k, v]) => `${name}${k} ${v}`),
        };
      });
    },
    gauge(name, help, collect) {
      return register<Gauge & Series>(name, help, "gauge", () => {
        const values = new Map<string, number>();
        const key = (labels: Labels | undefined) => admit(name, (k) => values.has(k), values.size, labelKey(labels));
        return {
          set(value, labels) {
            values.set(key(labels), value);
          },
          inc(labels, by = 1) {
            const k = key(labels);
            values.set(k, (values.get(k) ?? 0) + by);
          },
          get: (labels) => values.get(labelKey(labels)) ?? 0,
          render: () => {
            if (collect) for (const [labels, v] of collect()) values.set(key(labels), v);
            return [...values].map(([k, v]) => `${name}${k} ${v}`);
          },
        };
      });
    },
    histogram(name, help, buckets = LATENCY_BUCKETS_SECONDS) {
      return register<Histogram & Series>(name, help, "histogram", () => {
        const series = new Map<string, { counts: number[]; sum: number; count: number }>();
        const slot = (labelSet: string) => {
          const k = admit(name, (x) => series.has(x), series.size, labelSet);
          let s = series.get(k);
          if (!s) series.set(k, (s = { counts: new Array(buckets.length).fill(0), sum: 0, count: 0 }));
          return s;
        };
        const record = (s: { counts: number[]; sum: number; count: number }, value: number) => {
          s.sum += value;
          s.count++;
          for (let i = 0; i < buckets.length; i++) if (value <= buckets[i]!) { s.counts[i]!++; break; }
        };
        return {
          observe(value, labels) {
            record(slot(labelKey(labels)), value);
          },
          with(labels) {
            const s = slot(labelKey(labels));
            return { observe: (value: number) => record(s, value) };
          },
          snapshot(labels) {
            const s = series.get(labelKey(labels));
            return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
          },
          render() {
            const out: string[] = [];
            for (const [k, s] of series) {
              let cumulative = 0;
              for (let i = 0; i < buckets.length; i++) {
                cumulative += s.counts[i]!;
                out.push(`${name}_bucket${withLabel(k, `le="${buckets[i]}"`)} ${cumulative}`);
              }
              out.push(`${name}_bucket${withLabel(k, 'le="+Inf"')} ${s.count}`);
              out.push(`${name}_sum${k} ${s.sum}`);
              out.push(`${name}_count${k} ${s.count}`);
            }
            return out;
          },
        };
      });
    },
    render() {
      const out: string[] = [];
      for (const [name, f] of families) {
        out.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`, ...f.series.render());
      }
      out.push(`# HELP kvdrive_metric_series_overflow_total Label sets refused because their metric already had ${maxSeries} (KVDRIVE_METRIC_SERIES_MAX); counted under overflow="true"`);
      out.push("# TYPE kvdrive_metric_series_overflow_total counter");
      for (const [name, n] of overflowed) out.push(`kvdrive_metric_series_overflow_total{metric="${escapeLabel(name)}"} ${n}`);
      return out.join("\n") + "\n";
    },
  };
}
