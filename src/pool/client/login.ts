// A pooler client's start-up: the opening negotiation (SSLRequest, GSSENCRequest, CancelRequest), the
// StartupMessage, the password exchange (Auth), and the first use of a database checked on a real origin
// connection (Validating), up to the greeting that leaves the client Idle (client.ts goes on from there).
import { AUTH_OK, errorMessage, encodeBackendKeyData, encodeNegotiateProtocolVersion, encodeParameterStatus, READY_IDLE } from "../../protocol/backend.ts";
import { createFrames, readStartup } from "../../protocol/frames.ts";
import { decodeStartup, PROTOCOL_3_0 } from "../../protocol/frontend.ts";
import { parserLoaded, parserReady } from "../cache/parser.ts";
import type { Waiter } from "../pool.ts";
import { close, fatal, resumeMessages, send } from "./client.ts";
import { attach, cancelRunning, detach, flushToServer } from "./link.ts";
import { createAuthExchange, readStartupParams, type AuthStep } from "./startup.ts";
import { move, resumeReading, St, type Client } from "./state.ts";

/** Bytes before the StartupMessage is through; what follows it in the same chunk goes to the password exchange. */
export function onStartupData(cl: Client, chunk: Uint8Array) {
  let buf = cl.startupBuf ? Buffer.concat([cl.startupBuf, chunk]) : chunk;
  for (;;) {
    const pkt = readStartup(buf, cl.cfg.pgMaxLoginMessageBytes);
    if (!pkt) break;
    buf = buf.subarray(pkt[1]);
    onStartupPacket(cl, pkt[0], buf.length);
    if ((cl.st as St) !== St.Startup) break;
  }
  cl.startupBuf = buf.length ? buf.slice() : null;
  if ((cl.st as St) === St.Auth && cl.startupBuf) {
    const rest = cl.startupBuf;
    cl.startupBuf = null;
    cl.frames!.push(rest, cl.onFrame);
  }
}

/** `after`: bytes the client sent behind this packet without waiting for its answer. */
function onStartupPacket(cl: Client, body: Uint8Array, after: number) {
  const { ctx, socket } = cl;
  const pkt = decodeStartup(body);
  if (pkt.kind === "SSLRequest") {
    if (cl.overTls) return fatal(cl, "08P01", "SSLRequest received on a connection that already uses TLS");
    // Bytes sent before the TLS handshake were not encrypted and may have been injected (Postgres refuses them too).
    if (after === 0 && ctx.tls && ctx.upgradeTls(socket)) return;
    socket.write(new Uint8Array([0x4e])); // 'N'
    if (after > 0) {
      send(cl, errorMessage("08P01", "received unencrypted data after SSL request", "FATAL", "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack."));
      close(cl);
    }
    return;
  }
  if (pkt.kind === "GSSENCRequest") {
    socket.write(new Uint8Array([0x4e]));
    if (after > 0) fatal(cl, "08P01", "received unencrypted data after GSSAPI encryption request");
    return;
  }
  if (pkt.kind === "CancelRequest") {
    ctx.cancel(pkt.pid, pkt.key);
    close(cl);
    return;
  }
  const settings = readStartupParams(pkt.params);
  cl.user = settings.user;
  cl.database = settings.database;
  for (const [k, v] of settings.params) cl.params.set(k, v);
  for (const [k, v] of settings.sets) cl.sets.set(k, v);
  if (pkt.version !== PROTOCOL_3_0 || settings.unsupported.length) send(cl, encodeNegotiateProtocolVersion(PROTOCOL_3_0 & 0xffff, settings.unsupported));
  cl.authx = createAuthExchange(ctx.authMethod, cl.user, ctx.users.get(cl.user), ctx.dummyVerifier);
  move(cl, St.Auth);
  cl.frames = createFrames(cl.cfg.pgMaxLoginMessageBytes, "KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES");
  authStep(cl, cl.authx.begin());
}

function authStep(cl: Client, r: AuthStep) {
  if (r.error) {
    // auth_delay: a failed login is answered late, so passwords cannot be tried at speed; meanwhile the socket
    // is not read and the client still counts against KVDRIVE_PG_MAX_STARTING_CLIENTS.
    const err = r.error;
    if (cl.cfg.authFailureDelayMs === 0) return fatal(cl, err.code, err.message);
    cl.authFailing = true;
    cl.socket.pause();
    setTimeout(() => fatal(cl, err.code, err.message), cl.cfg.authFailureDelayMs).unref?.();
    return;
  }
  if (r.send) send(cl, r.send);
  if (r.done) authenticated(cl);
}

/** A password, SASLInitialResponse or SASLResponse message. */
export function onAuthMessage(cl: Client, type: number, body: Uint8Array): boolean {
  if (cl.authFailing) return true;
  authStep(cl, cl.authx!.step(type, body));
  return true;
}

function authenticated(cl: Client) {
  move(cl, St.Validating);
  if (parserLoaded()) return validate(cl);
  // The process's first client waits for the Postgres parser's worker (parser.ts starts it on first use).
  cl.socket.pause();
  parserReady().then(
    () => validate(cl),
    (e) => cl.st === St.Validating && fatal(cl, "XX000", `kvdrive could not load the Postgres parser: ${(e as Error).message}`),
  );
}

/** Authenticated and the parser loaded: check the database and start-up parameters, then greet. */
function validate(cl: Client) {
  if (cl.st !== St.Validating) return;
  const { ctx, params } = cl;
  cl.frames!.limit(cl.cfg.pgMaxMessageBytes, "KVDRIVE_PG_MAX_MESSAGE_BYTES");
  cl.pool = ctx.pool(cl.database, cl.user);
  const startupParams = () => {
    for (const [k, v] of ctx.defaultParams(cl.pool!)) if (!params.has(k)) params.set(k, v);
  };
  const needsCheck = cl.sets.size > 0 || [...params.keys()].some((k) => k !== "application_name");
  if (cl.pool.verified() && !needsCheck) {
    startupParams();
    return greet(cl);
  }
  // First use of this database, or start-up parameters the origin must validate: do it on a real
  // connection now, so a bad database (3D000) or setting is reported at connect time as Postgres would.
  cl.socket.pause();
  const w: Waiter = {
    grant(s) {
      cl.waiter = null;
      if (cl.st === St.Closed) return cl.pool!.release(s, true);
      startupParams();
      attach(cl, s, (error) => {
        if (error) {
          detach(cl, true);
          send(cl, error);
          return close(cl);
        }
        if (cl.server?.expect.length === 0) detach(cl, true);
        greet(cl);
      });
      flushToServer(cl);
    },
    fail(err) {
      cl.waiter = null;
      fatal(cl, err.code, err.message);
    },
  };
  cl.waiter = w;
  cl.pool.acquire(w);
}

/** The greeting: Validating to Idle (or Active, when the check's connection is still busy). */
function greet(cl: Client) {
  if (cl.st !== St.Validating) return;
  // One write for the whole greeting: a connection-per-transaction client pays for every syscall.
  const greeting = [AUTH_OK];
  for (const [k, v] of cl.params) greeting.push(encodeParameterStatus(k, v));
  greeting.push(encodeBackendKeyData(cl.pid, cl.key), READY_IDLE);
  send(cl, Buffer.concat(greeting));
  move(cl, cl.server ? St.Active : St.Idle);
  cl.cacheOn = cl.ctx.cacheOn(cl.database);
  if (cl.loginTimer) clearTimeout(cl.loginTimer);
  cl.tracker.started();
  cl.onLoggedIn?.();
  cl.ctx.register(cl.pid, cl.key, cl.id, () => cancelRunning(cl), cl.pool!);
  resumeReading(cl);
  resumeMessages(cl);
  flushToServer(cl);
}
