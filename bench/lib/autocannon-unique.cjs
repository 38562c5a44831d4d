// autocannon with a unique key per request (its -I flag only rewrites bodies): path gets ${prefix}${n}.
// Usage: node autocannon-unique.cjs '<json options>' ; prints autocannon's JSON result.
const autocannon = require("autocannon");
const o = JSON.parse(process.argv[2]);
let n = 0;
const url = new URL(o.url);
autocannon(
  {
    url: url.origin,
    connections: o.connections,
    duration: o.durationSec,
    headers: o.headers,
    requests: [{ method: o.method, body: o.body, setupRequest: (req) => ({ ...req, path: `${url.pathname}${n++}` }) }],
  },
  (err, result) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    process.stdout.write(JSON.stringify(result));
  },
);
