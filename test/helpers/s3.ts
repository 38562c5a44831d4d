// A real S3-compatible server (s3rver) per test file, in its own temp dir on a free loopback port.
// s3rver runs under Node in a child process, not inside Bun: it starts and serves objects under Bun, but its
// ListObjectsV2 continuation tokens use DES, missing from Bun's crypto, so every truncated listing got a 500.
// Under Node 20 DES needs the legacy OpenSSL provider, hence NODE_OPTIONS=--openssl-legacy-provider.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface TestS3 {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Stops serving but keeps the data: for fault tests (the endpoint refuses connections until resume()). */
  halt(): Promise<void>;
  /** Serves the same data again on the same port. */
  resume(): Promise<void>;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

// s3rver checks request signatures against its one built-in key pair.
const ACCESS_KEY = "S3RVER";
const MAIN = path.join(import.meta.dir, "s3rver-main.cjs");

export async function startTestS3(bucket = "kvdrive-test"): Promise<TestS3> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-s3-"));
  let port = 0;
  let child: ReturnType<typeof Bun.spawn> | null = null;

  const run = async () => {
    // Node, not Bun: found on PATH as the `node` binary.
    const p = Bun.spawn(["node", MAIN, dir, String(port), bucket], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, NODE_OPTIONS: "--openssl-legacy-provider" },
    });
    const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { done, value } = await reader.read();
      if (done) {
        const err = await new Response(p.stderr as ReadableStream<Uint8Array>).text();
        throw new Error(`s3rver did not start (exit ${await p.exited}): ${err.trim()}`);
      }
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    port = (JSON.parse(text.slice(0, text.indexOf("\n"))) as { port: number }).port;
    child = p;
  };
  const halt = async () => {
    const p = child;
    child = null;
    if (!p) return;
    p.kill("SIGTERM");
    await p.exited;
  };
  await run();

  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    region: "us-east-1",
    accessKeyId: ACCESS_KEY,
    secretAccessKey: ACCESS_KEY,
    halt,
    async resume() {
      if (!child) await run();
    },
    async stop() {
      await halt();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
