// A pooler client's start-up: the opening negotiation (SSLRequest, GSSENCRequest, CancelRequest), the
// StartupMessage, the password exchange, and the first use of a database checked on a real origin connection,
// up to the greeting that leaves the client Ready (client.ts goes on from there).
import type { Socket } from "bun";
import { AUTH_OK, errorMessage, encodeBackendKeyData, encodeNegotiateProtocolVersion, encodeParameterStatus, READY_IDLE } from "../../protocol/backend.ts";
import { createFrames, readStartup } from "../../protocol/frames.ts";
import { decodeStartup, PROTOCOL_3_0 } from "../../protocol/frontend.ts";
import { St, type ClientState } from "./state.ts";
import type { PoolerContext } from "../context.ts";
import type { Waiter } from "../pool.ts";
import type { Server } from "../server/server.ts";
import { createAuthExchange, readStartupParams, type AuthExchange, type AuthStep } from "./startup.ts";

/** What start-up uses of its client. */
export interface LoginCore {
  c: ClientState;
  ctx: PoolerContext;
  socket: Socket<any>;
  overTls: boolean;
  params: Map<string, string>;
  sets: Map<string, string>;
  /** The BackendKeyData the client gets (the pooler's own, mapped to origin backends by ctx.cancel). */
  pid: number;
  key: Uint8Array;
  send(b: Uint8Array): void;
  fatal(code: string, message: string): void;
  close(): void;
  attach(s: Server, onReplayed?: (error: Uint8Array | null) => void): void;
  detach(reusable: boolean): void;
  flushToServer(): void;
  resumeMessages(): void;
  onAuthOrReady(type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean;
  /** The greeting is out and the client is Ready. */
  ready(): void;
}

export function createLogin(core: LoginCore) {
  const { c, ctx, socket, overTls, params, sets, pid, key, send, fatal, close, attach, detach, flushToServer, resumeMessages, onAuthOrReady, ready } = core;
  const cfg = ctx.config;
  let startupBuf: Uint8Array | null = null;
  let authx: AuthExchange | null = null;

  /** Bytes before the StartupMessage is through; what follows it in the same chunk goes to the password exchange. */
  function onStartupData(chunk: Uint8Array) {
    let buf = startupBuf ? Buffer.concat([startupBuf, chunk]) : chunk;
    for (;;) {
      const pkt = readStartup(buf, cfg.pgMaxLoginMessageBytes);
      if (!pkt) break;
      buf = buf.subarray(pkt[1]);
      onStartupPacket(pkt[0], buf.length);
      if ((c.st as St) !== St.Startup) break;
    }
    startupBuf = buf.length ? buf.slice() : null;
    if ((c.st as St) === St.Auth && startupBuf) {
      const rest = startupBuf;
      startupBuf = null;
      c.frames!.push(rest, onAuthOrReady);
    }
  }

  /** `after`: bytes the client sent behind this packet without waiting for its answer. */
  function onStartupPacket(body: Uint8Array, after: number) {
    const pkt = decodeStartup(body);
    if (pkt.kind === "SSLRequest") {
      if (overTls) return fatal("08P01", "SSLRequest received on a connection that already uses TLS");
      // Bytes sent before the TLS handshake were not encrypted and may have been injected (Postgres refuses them too).
      if (after === 0 && ctx.tls && ctx.upgradeTls(socket)) return;
      socket.write(new Uint8Array([0x4e])); // 'N'
      if (after > 0) {
        send(errorMessage("08P01", "received unencrypted data after SSL request", "FATAL", "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack."));
        close();
      }
      return;
    }
    if (pkt.kind === "GSSENCRequest") {
      socket.write(new Uint8Array([0x4e]));
      if (after > 0) fatal("08P01", "received unencrypted data after GSSAPI encryption request");
      return;
    }
    if (pkt.kind === "CancelRequest") {
      ctx.cancel(pkt.pid, pkt.key);
      c.st = St.Closed;
      socket.end();
      return;
    }
    const settings = readStartupParams(pkt.params);
    c.user = settings.user;
    c.database = settings.database;
    for (const [k, v] of settings.params) params.set(k, v);
    for (const [k, v] of settings.sets) sets.set(k, v);
    if (pkt.version !== PROTOCOL_3_0 || settings.unsupported.length) send(encodeNegotiateProtocolVersion(PROTOCOL_3_0 & 0xffff, settings.unsupported));
    authx = createAuthExchange(ctx.authMethod, c.user, ctx.users.get(c.user), ctx.dummyVerifier);
    c.st = St.Auth;
    c.frames = createFrames(cfg.pgMaxLoginMessageBytes, "KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES");
    authStep(authx.begin());
  }

  let failing = false;
  function authStep(r: AuthStep) {
    if (r.error) {
      // auth_delay: a failed login is answered late, so passwords cannot be tried at speed; meanwhile the socket
      // is not read and the client still counts against KVDRIVE_PG_MAX_STARTING_CLIENTS.
      const err = r.error;
      if (cfg.authFailureDelayMs === 0) return fatal(err.code, err.message);
      failing = true;
      socket.pause();
      setTimeout(() => fatal(err.code, err.message), cfg.authFailureDelayMs).unref?.();
      return;
    }
    if (r.send) send(r.send);
    if (r.done) authenticated();
  }

  function onAuthMessage(type: number, body: Uint8Array): boolean {
    if (failing) return true;
    authStep(authx!.step(type, body));
    return true;
  }

  function authenticated() {
    c.st = St.Validating;
    c.frames!.limit(cfg.pgMaxMessageBytes, "KVDRIVE_PG_MAX_MESSAGE_BYTES");
    c.pool = ctx.pool(c.database, c.user);
    const startupParams = () => {
      for (const [k, v] of ctx.defaultParams(c.pool!)) if (!params.has(k)) params.set(k, v);
    };
    const finish = () => {
      if (c.st !== St.Validating) return;
      // One write for the whole greeting: a connection-per-transaction client pays for every syscall.
      const greeting = [AUTH_OK];
      for (const [k, v] of params) greeting.push(encodeParameterStatus(k, v));
      greeting.push(encodeBackendKeyData(pid, key), READY_IDLE);
      send(Buffer.concat(greeting));
      c.st = St.Ready;
      c.cacheOn = ctx.cacheOn(c.database);
      ready();
      socket.resume();
      resumeMessages();
      flushToServer();
    };
    const needsCheck = sets.size > 0 || [...params.keys()].some((k) => k !== "application_name");
    if (c.pool.verified() && !needsCheck) {
      startupParams();
      return finish();
    }
    // First use of this database, or start-up parameters the origin must validate: do it on a real
    // connection now, so a bad database (3D000) or setting is reported at connect time as Postgres would.
    socket.pause();
    const w: Waiter = {
      grant(s) {
        c.waiter = null;
        if (c.st === St.Closed) return c.pool!.release(s, true);
        startupParams();
        attach(s, (error) => {
          if (error) {
            detach(true);
            send(error);
            return close();
          }
          if (c.server?.expect.length === 0) detach(true);
          finish();
        });
        flushToServer();
      },
      fail(err) {
        c.waiter = null;
        fatal(err.code, err.message);
      },
    };
    c.waiter = w;
    c.pool.acquire(w);
  }


  return { onStartupData, onAuthMessage };
}
