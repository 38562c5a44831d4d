// autocannon in its own Node process, so the load generator never shares an event loop with the server.
// argv[2] names a JSON file (bodies can exceed argv's size limit): {url, connections, durationSec, headers, requests: [{method, path, body, unique}], overallRate?}.
// overallRate caps requests per second across all connections (latency at a fixed offered load).
// `unique` appends a per-run counter to the path (fresh keys for writes); autocannon's -I only rewrites bodies.
// Prints autocannon's JSON result on stdout.
const autocannon = require("autocannon");
const o = JSON.parse(require("node:fs").readFileSync(process.argv[2], "utf8"));
let n = 0;
const requests = o.requests.map((r) => {
  const req = { method: r.method, path: r.path };
  if (r.body !== undefined) req.body = r.body;
  if (r.unique) req.setupRequest = (q) => ({ ...q, path: `${r.path}${n++}` });
  return req;
});
autocannon(
  { url: o.url, connections: o.connections, duration: o.durationSec, headers: o.headers, requests, timeout: 10, ...(o.overallRate ? { overallRate: o.overallRate } : {}) },
  (err, result) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    process.stdout.write(JSON.stringify(result));
  },
);
