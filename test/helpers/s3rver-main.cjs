// Runs s3rver under Node for test/helpers/s3.ts. Not under Bun: s3rver's ListObjectsV2 continuation tokens
// use DES, which Bun's crypto lacks (and Node 20 only has with --openssl-legacy-provider).
// Usage: node s3rver-main.cjs <dir> <port> <bucket>; prints {"port":N} once listening.
const S3rver = require("s3rver");
const [dir, port, bucket] = process.argv.slice(2);
const server = new S3rver({
  address: "127.0.0.1",
  port: Number(port),
  silent: true,
  directory: dir,
  configureBuckets: [{ name: bucket, configs: [] }],
});
server.run().then(
  (addr) => process.stdout.write(JSON.stringify({ port: addr.port }) + "\n"),
  (err) => {
    process.stderr.write(String(err && err.stack || err) + "\n");
    process.exit(1);
  },
);
const stop = () => server.close().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// The test process owns us: when it goes away (even by SIGKILL), stdin closes and we leave too.
process.stdin.on("end", stop);
process.stdin.resume();
