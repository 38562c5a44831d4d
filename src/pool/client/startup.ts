// Client start-up, before any origin connection is involved: reading the StartupMessage's parameters, and
// the password exchange (SCRAM-SHA-256, MD5 or trust) against the verifiers the pooler derived at start.
import { randomBytes } from "node:crypto";
import { decodePassword, decodeSASLInitialResponse, F } from "../../protocol/frontend.ts";
import { encodeAuthentication } from "../../protocol/backend.ts";
import { createScramServer, md5Matches, type ScramVerifier } from "../scram.ts";
import { REPLAYED_LOWER } from "../server/replay.ts";
import { setConfigSql, VALID_NAME } from "../session.ts";
import type { UserAuth } from "../context.ts";
import { ProtocolError, ScramError } from "../../errors.ts";

export interface StartupSettings {
  user: string;
  database: string;
  /** Reported parameters the client asked for (replayed on every origin connection it uses). */
  params: Map<string, string>;
  /** Other settings it asked for, as SET statements keyed by lower-case name. */
  sets: Map<string, string>;
  /** `_pq_.` protocol options we do not support, for NegotiateProtocolVersion. */
  unsupported: string[];
}

/** Reads a StartupMessage's parameters; throws ProtocolError (28000, 08P01) for what cannot be served. */
export function readStartupParams(p: Record<string, string>): StartupSettings {
  if (p.replication !== undefined && !["false", "0", "off", "no"].includes(p.replication)) {
    throw new ProtocolError("replication connections are not supported by the pooler", "08P01");
  }
  const user = p.user ?? "";
  if (!user) throw new ProtocolError("no PostgreSQL user name specified in startup packet", "28000");
  const params = new Map<string, string>();
  const sets = new Map<string, string>();
  const setting = (name: string, value: string) => {
    // The name becomes part of the SET replayed on every origin connection: identifier characters only, as
    // Postgres requires of setting names (quoted as an identifier all the same), the value always a literal.
    if (!VALID_NAME.test(name) || name.length > 63) throw new ProtocolError(`invalid configuration parameter name "${name.slice(0, 63)}" in the startup packet`, "42602");
    if (value.includes("\0")) throw new ProtocolError(`invalid value for parameter "${name}" in the startup packet`, "22023");
    const canonical = REPLAYED_LOWER.get(name.toLowerCase());
    // application_name is cut to NAMEDATALEN - 1 as Postgres does, so the replayed value matches the reported one.
    if (canonical) params.set(canonical, canonical === "application_name" ? value.slice(0, 63) : value);
    else sets.set(name.toLowerCase(), setConfigSql(name.toLowerCase(), value));
  };
  for (const [k, v] of Object.entries(p)) {
    if (k === "user" || k === "database" || k === "replication" || k === "options" || k.startsWith("_pq_.")) continue;
    setting(k, v);
  }
  // options="-c name=value --name=value", with backslash escapes, as libpq passes them.
  for (const m of (p.options ?? "").matchAll(/(?:-c\s*|--)([A-Za-z_.-]+)=((?:\\.|[^\s\\])*)/g)) {
    setting(m[1]!.replace(/-/g, "_"), m[2]!.replace(/\\(.)/g, "$1"));
  }
  return { user, database: p.database || user, params, sets, unsupported: Object.keys(p).filter((k) => k.startsWith("_pq_.")) };
}

export type AuthStep = { send?: Uint8Array; done?: true; error?: ProtocolError };

export interface AuthExchange {
  /** The first request to the client; done at once for trust. */
  begin(): AuthStep;
  /** One password-type message from the client. */
  step(type: number, body: Uint8Array): AuthStep;
}

export function createAuthExchange(method: "scram-sha-256" | "md5" | "trust", user: string, auth: UserAuth | undefined, dummy: ScramVerifier): AuthExchange {
  const wrong = () => ({ error: new ProtocolError(`password authentication failed for user "${user}"`, "28P01") });
  const text = new TextEncoder();
  let md5Salt: Uint8Array | null = null;
  let scram: ReturnType<typeof createScramServer> | null = null;
  return {
    begin() {
      if (method === "trust") return { done: true };
      if (method === "md5") {
        md5Salt = randomBytes(4);
        return { send: encodeAuthentication({ kind: "MD5Password", salt: md5Salt }) };
      }
      return { send: encodeAuthentication({ kind: "SASL", mechanisms: ["SCRAM-SHA-256"] }) };
    },
    step(type, body) {
      if (type !== F.Password) throw new ProtocolError(`expected a password message, got message type ${type}`);
      if (md5Salt) return auth && md5Matches(auth.md5, md5Salt, decodePassword(body)) ? { done: true } : wrong();
      try {
        if (!scram) {
          const init = decodeSASLInitialResponse(body);
          if (init.mechanism !== "SCRAM-SHA-256") return { error: new ProtocolError(`SASL mechanism ${init.mechanism} is not supported; use SCRAM-SHA-256`, "28000") };
          // Unknown users get the same exchange with a throwaway verifier, so user names cannot be probed.
          scram = createScramServer(auth?.scram ?? dummy);
          return { send: encodeAuthentication({ kind: "SASLContinue", data: text.encode(scram.first(Buffer.from(init.data).toString())) }) };
        }
        const final = scram.final(Buffer.from(body).toString());
        if (!final || !auth) return wrong();
        return { send: encodeAuthentication({ kind: "SASLFinal", data: text.encode(final) }), done: true };
      } catch (e) {
        if (e instanceof ScramError) return { error: new ProtocolError(e.message, "08P01") };
        throw e;
      }
    },
  };
}
