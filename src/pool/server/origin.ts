// Server side: one authenticated connection to the origin Postgres (SCRAM-SHA-256, MD5 or cleartext,
// optionally TLS with sslmode require/verify-full). After start-up its bytes go to whoever owns it.
import type { Socket } from "bun";
import fs from "node:fs";
import { createFrames } from "../../protocol/frames.ts";
import { encodeCancelRequest, encodePassword, encodeSASLInitialResponse, encodeSASLResponse, encodeSSLRequest, encodeStartup } from "../../protocol/frontend.ts";
import { B, decodeAuthentication, decodeBackendKeyData, decodeErrorResponse, decodeParameterStatus, decodeReadyForQuery } from "../../protocol/backend.ts";
import { createOutbox } from "../outbox.ts";
import { createScramClient, md5Response, md5Verifier } from "../scram.ts";
import { OriginError, ProtocolError } from "../../errors.ts";

export interface OriginTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  sslmode: "disable" | "prefer" | "require" | "verify-ca" | "verify-full";
  sslrootcert?: string;
}

export interface OriginHandler {
  data(chunk: Uint8Array): void;
  drain(): void;
  closed(): void;
}

export interface OriginConn {
  readonly id: number;
  readonly database: string;
  readonly pid: number;
  readonly key: Uint8Array;
  /** Parameters the origin reported through ParameterStatus, kept current by the relay. */
  readonly params: Map<string, string>;
  readonly createdAt: number;
  lastUsedAt: number;
  closed: boolean;
  /** Set by the owner after start-up. */
  handler: OriginHandler | null;
  write(bytes: Uint8Array): void;
  queued(): number;
  pause(): void;
  resume(): void;
  close(): void;
}

export function parseOriginUrl(url: string): OriginTarget & { database: string } {
  const u = new URL(url);
  const q = u.searchParams;
  const sslmode = (q.get("sslmode") ?? "disable") as OriginTarget["sslmode"];
  if (!["disable", "prefer", "require", "verify-ca", "verify-full"].includes(sslmode)) {
    throw new Error(`ORIGIN_DATABASE_URL sslmode=${sslmode} is not one of disable, prefer, require, verify-ca, verify-full`);
  }
  return {
    host: decodeURIComponent(u.hostname || "127.0.0.1").replace(/^\[|\]$/g, ""),
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || "postgres"),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.slice(1)) || decodeURIComponent(u.username || "postgres"),
    sslmode,
    sslrootcert: q.get("sslrootcert") ?? undefined,
  };
}

let nextId = 1;

interface SocketState {
  /** TLS certificate must verify (sslmode verify-ca/verify-full). */
  verify?: boolean;
  onData(chunk: Uint8Array): void;
  onDrain(): void;
  onClose(err?: Error): void;
}
const handlers = {
  data: (s: Socket<SocketState>, chunk: Uint8Array) => s.data.onData(chunk),
  drain: (s: Socket<SocketState>) => s.data.onDrain(),
  close: (s: Socket<SocketState>) => s.data.onClose(),
  error: (s: Socket<SocketState>, err: Error) => s.data.onClose(err),
  end: (s: Socket<SocketState>) => void s.end(),
  connectError: (s: Socket<SocketState>, err: Error) => s.data.onClose(err),
  handshake: (s: Socket<SocketState>, ok: boolean, err: Error | null) => {
    if (!ok || (err && s.data.verify)) s.data.onClose(new Error(`TLS handshake with the origin failed: ${err?.message ?? "unknown error"}`));
  },
};

/** Opens and authenticates one origin connection; `params` are extra start-up parameters. */
export async function connectOrigin(t: OriginTarget, database: string, now: () => number, params: Record<string, string> = {}): Promise<OriginConn> {
  let onData: (chunk: Uint8Array) => void = () => {};
  let onDrain = () => {};
  let onClose: (err?: Error) => void = () => {};
  const state: SocketState = { onData: (c) => onData(c), onDrain: () => onDrain(), onClose: (e) => onClose(e) };
  let socket: Socket<SocketState> = await Bun.connect({ hostname: t.host, port: t.port, socket: handlers, data: state }).catch((e) => {
    throw new OriginError(`cannot reach the origin at ${t.host}:${t.port}: ${e.message}`, "08006");
  });
  socket.setNoDelay(true);

  const fail = (reject: (e: Error) => void) => (err?: Error) =>
    reject(err instanceof OriginError ? err : new OriginError(`origin connection closed during start-up${err ? ": " + err.message : ""}`, "08006"));

  if (t.sslmode !== "disable") {
    const answer = await new Promise<number>((resolve, reject) => {
      onData = (c) => resolve(c[0]!);
      onClose = fail(reject);
      socket.write(encodeSSLRequest());
    });
    if (answer === 0x53) {
      const verify = t.sslmode === "verify-full" || t.sslmode === "verify-ca";
      const ca = t.sslrootcert ? fs.readFileSync(t.sslrootcert, "utf8") : undefined;
      // The plain socket now only carries the encrypted bytes: its events must not reach the protocol.
      const tlsState: SocketState = { verify, onData: (c) => onData(c), onDrain: () => onDrain(), onClose: (e) => onClose(e) };
      state.onData = () => {};
      state.onDrain = () => {};
      state.onClose = () => {};
      const [, tls] = socket.upgradeTLS<SocketState>({
        data: tlsState,
        tls: { rejectUnauthorized: verify, ca, serverName: t.sslmode === "verify-full" ? t.host : undefined, checkServerIdentity: t.sslmode === "verify-full" ? undefined : () => undefined } as never,
        socket: handlers,
      });
      socket = tls;
    } else if (t.sslmode !== "prefer") {
      socket.end();
      throw new OriginError(`the origin at ${t.host}:${t.port} does not support TLS, but sslmode=${t.sslmode} requires it`, "08004");
    }
  }

  const out = createOutbox(socket);
  const frames = createFrames(64 * 1024 * 1024);
  const reported = new Map<string, string>();
  let pid = 0;
  let key: Uint8Array = new Uint8Array(4);

  await new Promise<void>((resolve, reject) => {
    onClose = fail(reject);
    let scram: ReturnType<typeof createScramClient> | null = null;
    onData = (chunk) => {
      try {
        frames.push(chunk, (type, body) => {
          switch (type) {
            case B.Authentication: {
              const a = decodeAuthentication(body);
              if (a.kind === "CleartextPassword") out.write(encodePassword(t.password));
              else if (a.kind === "MD5Password") out.write(encodePassword(md5Response(md5Verifier(t.user, t.password), a.salt)));
              else if (a.kind === "SASL") {
                if (!a.mechanisms.includes("SCRAM-SHA-256")) throw new OriginError(`origin offers no supported SASL mechanism (${a.mechanisms.join(", ")})`, "28000");
                scram = createScramClient(t.password);
                out.write(encodeSASLInitialResponse("SCRAM-SHA-256", Buffer.from(scram.first())));
              } else if (a.kind === "SASLContinue") out.write(encodeSASLResponse(Buffer.from(scram!.respond(Buffer.from(a.data).toString()))));
              else if (a.kind === "SASLFinal") {
                if (!scram!.verify(Buffer.from(a.data).toString())) throw new OriginError("origin's SCRAM server signature is wrong", "28000");
              }
              return;
            }
            case B.ParameterStatus: {
              const p = decodeParameterStatus(body);
              reported.set(p.name, p.value);
              return;
            }
            case B.BackendKeyData: {
              const k = decodeBackendKeyData(body);
              pid = k.pid;
              key = k.key;
              return;
            }
            case B.ErrorResponse: {
              const f = decodeErrorResponse(body);
              throw new OriginError(f.M ?? "origin refused the connection", f.C ?? "08006", f);
            }
            case B.ReadyForQuery:
              decodeReadyForQuery(body);
              resolve();
              return false;
            // NoticeResponse and NegotiateProtocolVersion during start-up need no answer.
          }
        });
      } catch (e) {
        reject(e instanceof OriginError ? e : new OriginError(`origin start-up failed: ${(e as Error).message}`, e instanceof ProtocolError ? e.code : "08006"));
        socket.end();
      }
    };
    onDrain = () => void out.drain();
    out.write(encodeStartup({ user: t.user, database, ...params }));
  });

  const created = now();
  let paused = false;
  const conn: OriginConn = {
    id: nextId++,
    database,
    pid,
    key,
    params: reported,
    createdAt: created,
    lastUsedAt: created,
    closed: false,
    handler: null,
    write: (b) => out.write(b),
    queued: () => out.queued(),
    // Only changes of state reach the socket: the relay resumes at every release, and most were never paused.
    pause() {
      if (paused) return;
      paused = true;
      socket.pause();
    },
    resume() {
      if (!paused) return;
      paused = false;
      socket.resume();
    },
    close() {
      if (conn.closed) return;
      conn.closed = true;
      socket.end(new Uint8Array([0x58, 0, 0, 0, 4])); // Terminate, so the origin logs a clean exit
    },
  };
  onData = (chunk) => conn.handler?.data(chunk);
  onDrain = () => {
    if (out.drain()) conn.handler?.drain();
  };
  onClose = () => {
    conn.closed = true;
    conn.handler?.closed();
  };
  // Anything that arrived with ReadyForQuery belongs to the owner; there is none before the first query.
  return conn;
}

/** Sends a CancelRequest for an origin backend over a fresh connection, as the protocol requires. */
export async function cancelOrigin(t: OriginTarget, pid: number, key: Uint8Array): Promise<void> {
  // Resolves once the postmaster closed the connection: by then it has signalled the backend (or given up).
  let closed = () => {};
  const done = new Promise<void>((resolve) => (closed = resolve));
  const socket = await Bun.connect({
    hostname: t.host,
    port: t.port,
    socket: { data() {}, close: () => closed(), error: () => closed(), connectError: () => closed() },
  }).catch(() => null);
  if (!socket) return;
  socket.write(encodeCancelRequest(pid, key));
  const timer = setTimeout(() => closed(), 5000);
  await done;
  clearTimeout(timer);
  socket.end();
}
