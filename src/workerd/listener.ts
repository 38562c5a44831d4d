// The KV-binding listener (KVDRIVE_WORKERD_PORT): the HTTP server workerd's `kvNamespace` bindings talk to.
// node:http rather than Bun.serve, because the Worker sees only the reason phrase of an error and Bun.serve
// always sends the standard one ("Payload Too Large"); node:http sends ours.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { ApiError, CODE } from "../errors.ts";
import type { KVService } from "../kv/types.ts";
import type { Registry } from "../metrics/registry.ts";
import { createBindingHandler } from "./handler.ts";
import { INSTANCE_FILE, type InstanceInfo } from "./instance.ts";
import { utf8Header } from "./protocol.ts";

export interface WorkerdListener {
  port: number;
  /** HOST:PORT for a workerd `external` service. */
  address: string;
  stop(): Promise<void>;
}

export interface WorkerdListenerOptions {
  config: Config;
  kv: KVService;
  apiToken: string;
  clock: Clock;
  metrics: Registry;
  /** The HTTP API's and the pooler's ports, for instance.json (how the CLI finds this process). */
  httpPort: number;
  pgPort: number;
  log?: (line: string) => void;
}

// A body the handler refused before reading it (a declared length over the limit, a bad TTL) is read and
// dropped up to this much, so the client gets to read the error instead of a reset; past it the socket closes.
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;
const MAX_HEADER_BYTES = 16 * 1024;
const REQUEST_URL = "http://kvdrive.local/";
const EMPTY = new Uint8Array(0);

/** Starts the listener, or returns null when KVDRIVE_WORKERD_PORT is off. */
export async function startWorkerdListener(o: WorkerdListenerOptions): Promise<WorkerdListener | null> {
  const file = path.join(o.config.dataDir, INSTANCE_FILE);
  const host = connectHost(o.config.host);
  const instance = { pid: process.pid, http: `http://${host}:${o.httpPort}`, postgres: `${host}:${o.pgPort}` };
  if (o.config.workerdPort === "off") {
    writeInstance(file, { ...instance, workerd: null });
    return null;
  }
  const handle = createBindingHandler({
    kv: o.kv, apiToken: o.apiToken, clock: o.clock,
    authFailureDelayMs: o.config.authFailureDelayMs, authFailureMaxPending: o.config.httpAuthFailureMaxPending,
  });
  const requests = o.metrics.counter("kvdrive_workerd_requests_total", "Requests on the workerd KV-binding listener by method and status");
  const series = new Map<string, { inc(): void }>();

  // The API's idle bound (KVDRIVE_HTTP_IDLE_TIMEOUT_SECONDS): a connection silent that long is closed, and so is
  // one whose request body stalls (Bun's node:http does not time a request in progress itself).
  const idleMs = o.config.httpIdleTimeoutSeconds * 1000;
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES }, (req, res) => {
    serve(req, res).catch(() => req.socket.destroy());
  });
  server.on("connection", (socket) => socket.setTimeout(idleMs, () => socket.destroy()));

  async function serve(req: http.IncomingMessage, res: http.ServerResponse) {
    const method = req.method ?? "GET";
    // Set by request(), the one place the body is read from.
    const read: { body: BodyStream | null } = { body: null };
    const reply = await handle({
      method,
      url: req.url ?? "/",
      header(name) {
        const v = req.headers[name];
        return v === undefined ? null : utf8Header(Array.isArray(v) ? v.join(", ") : v);
      },
      request() {
        const headers = new Headers();
        for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
        read.body ??= bodyStream(req, idleMs);
        return new Request(REQUEST_URL, { method, headers, body: read.body.stream, duplex: "half" } as RequestInit);
      },
    });
    const payload = reply.body ?? EMPTY;
    res.writeHead(reply.status, reply.reason, { ...reply.headers, "content-length": String(typeof payload === "string" ? Buffer.byteLength(payload) : payload.byteLength) });
    res.end(payload);
    // A body the handler did not read (refused early, or a bodiless method sent one) is dropped, bounded.
    if (read.body) read.body.drain();
    else if (hasBody(req)) bodyStream(req, idleMs).drain();
    count(method, reply.status);
  }

  function count(method: string, status: number) {
    const id = `${method} ${status}`;
    let c = series.get(id);
    if (!c) series.set(id, (c = requests.with({ method: series.size < 100 ? method : "other", status })));
    c.inc();
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(o.config.workerdPort), o.config.host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const address = `${host}:${port}`;
  writeInstance(file, { ...instance, workerd: address });
  o.log?.(`kvdrive workerd KV-binding listener on ${o.config.host}:${port}`);
  return {
    port,
    address,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
      // A stopped kvdrive is not found by the CLI even if its pid is later reused.
      fs.rmSync(file, { force: true });
    },
  };
}

/**
 * The request body as a web stream, pulled on demand so a refused body is never held in memory. Once the handler
 * stops reading (cancel) or has answered (drain), the rest is read and dropped up to MAX_DRAIN_BYTES, so the
 * client can read the answer; past that the socket is closed. While it waits for bytes, a body silent for idleMs
 * closes the connection.
 */
interface BodyStream {
  stream: ReadableStream<Uint8Array>;
  drain(): void;
}

function bodyStream(req: http.IncomingMessage, idleMs: number): BodyStream {
  let discarding = false;
  let dropped = 0;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let idle: ReturnType<typeof setTimeout> | undefined;
  const waitForData = () => {
    if (idle) idle.refresh();
    else idle = setTimeout(() => {
      if (!discarding) controller.error(new ApiError(408, CODE.badRequest, `The request body sent nothing for ${idleMs / 1000} s (KVDRIVE_HTTP_IDLE_TIMEOUT_SECONDS).`));
      req.socket.destroy();
    }, idleMs);
  };
  const stopWaiting = () => {
    clearTimeout(idle);
    idle = undefined;
  };
  const discard = () => {
    if (discarding) return;
    discarding = true;
    waitForData();
    req.resume();
  };
  req.pause();
  req.on("data", (chunk: Buffer) => {
    if (discarding) {
      waitForData();
      dropped += chunk.length;
      if (dropped > MAX_DRAIN_BYTES) req.socket.destroy();
      return;
    }
    controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    if ((controller.desiredSize ?? 1) <= 0) {
      req.pause();
      stopWaiting();
    } else waitForData();
  });
  req.on("end", () => {
    stopWaiting();
    if (!discarding) controller.close();
  });
  req.on("error", (e) => {
    stopWaiting();
    if (!discarding) controller.error(e);
  });
  req.on("close", stopWaiting);
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    pull() {
      waitForData();
      req.resume();
    },
    cancel: discard,
  });
  return { stream, drain: () => (req.readableEnded ? undefined : discard()) };
}

function hasBody(req: http.IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return (length !== undefined && length !== "0") || req.headers["transfer-encoding"] !== undefined;
}

/** The address a client on this machine dials for a listener bound to `host`. */
export function connectHost(host: string): string {
  if (host === "0.0.0.0" || host === "" || host === "::") return "127.0.0.1";
  return host.includes(":") ? `[${host}]` : host;
}

function writeInstance(file: string, info: InstanceInfo) {
  fs.writeFileSync(file, JSON.stringify(info) + "\n", { mode: 0o600 });
}
