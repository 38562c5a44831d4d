// SCRAM-SHA-256 (RFC 5802/7677) for both sides of the pooler, and Postgres MD5 password hashing.
// Server verifiers are derived once per user at start-up, so a new connection costs a few HMACs, not PBKDF2.
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";
import { ScramError } from "../errors.ts";

export interface ScramVerifier {
  salt: Buffer;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
}

const hmac = (key: Buffer, data: string | Buffer) => createHmac("sha256", key).update(data).digest();
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest();
const xor = (a: Buffer, b: Buffer) => {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
};

export function deriveScramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = 4096): ScramVerifier {
  const salted = pbkdf2Sync(password.normalize("NFKC"), salt, iterations, 32, "sha256");
  return { salt, iterations, storedKey: sha256(hmac(salted, "Client Key")), serverKey: hmac(salted, "Server Key") };
}

/** Parses attribute=value pairs of a SCRAM message. */
function attributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(",")) {
    const eq = part.indexOf("=");
    if (eq === 1) out.set(part[0]!, part.slice(2));
  }
  return out;
}

/** Server side of one SCRAM exchange. */
export function createScramServer(v: ScramVerifier, serverNonce = randomBytes(18).toString("base64")) {
  let clientFirstBare = "";
  let serverFirst = "";
  let gs2 = "";
  let nonce = "";
  return {
    /** Takes client-first-message, returns server-first-message. */
    first(clientFirst: string): string {
      // gs2 header: "n,," or "y,," (no channel binding); "p=" would need SCRAM-SHA-256-PLUS, which is not offered.
      const m = /^([ny]),(?:a=[^,]*)?,(.*)$/.exec(clientFirst);
      if (!m) throw new ScramError("malformed SCRAM client-first-message (channel binding is not supported)");
      gs2 = clientFirst.slice(0, clientFirst.length - m[2]!.length);
      clientFirstBare = m[2]!;
      const clientNonce = attributes(clientFirstBare).get("r");
      if (!clientNonce) throw new ScramError("SCRAM client-first-message has no nonce");
      nonce = clientNonce + serverNonce;
      serverFirst = `r=${nonce},s=${v.salt.toString("base64")},i=${v.iterations}`;
      return serverFirst;
    },
    /** Takes client-final-message; returns server-final-message, or null when the proof is wrong. */
    final(clientFinal: string): string | null {
      const a = attributes(clientFinal);
      const proof = a.get("p");
      if (a.get("r") !== nonce || !proof) throw new ScramError("SCRAM client-final-message has a wrong nonce or no proof");
      if (a.get("c") !== Buffer.from(gs2).toString("base64")) throw new ScramError("SCRAM channel binding does not match");
      const withoutProof = clientFinal.slice(0, clientFinal.lastIndexOf(",p="));
      const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
      const clientProof = Buffer.from(proof, "base64");
      if (clientProof.length !== 32) return null;
      const clientKey = xor(clientProof, hmac(v.storedKey, authMessage));
      if (!timingSafeEqual(sha256(clientKey), v.storedKey)) return null;
      return `v=${hmac(v.serverKey, authMessage).toString("base64")}`;
    },
  };
}

/** Client side of one SCRAM exchange (the pooler logging in to the origin). */
export function createScramClient(password: string, clientNonce = randomBytes(18).toString("base64")) {
  const clientFirstBare = `n=*,r=${clientNonce}`;
  let expectedServerSignature = "";
  return {
    first: () => `n,,${clientFirstBare}`,
    /** Takes server-first-message, returns client-final-message. */
    respond(serverFirst: string): string {
      const a = attributes(serverFirst);
      const nonce = a.get("r");
      const salt = a.get("s");
      const iterations = Number(a.get("i"));
      if (!nonce?.startsWith(clientNonce) || !salt || !(iterations > 0)) throw new ScramError("malformed SCRAM server-first-message");
      const salted = pbkdf2Sync(password.normalize("NFKC"), Buffer.from(salt, "base64"), iterations, 32, "sha256");
      const clientKey = hmac(salted, "Client Key");
      const withoutProof = `c=biws,r=${nonce}`;
      const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
      const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
      expectedServerSignature = hmac(hmac(salted, "Server Key"), authMessage).toString("base64");
      return `${withoutProof},p=${proof.toString("base64")}`;
    },
    verify(serverFinal: string): boolean {
      return attributes(serverFinal).get("v") === expectedServerSignature;
    },
  };
}

const md5hex = (s: string | Buffer) => createHash("md5").update(s).digest("hex");

/** The inner MD5 hash Postgres stores for a user: md5(password || user), hex. */
export const md5Verifier = (user: string, password: string) => md5hex(password + user);

/** What an MD5 client sends: "md5" + md5(md5(password || user) || salt). */
export function md5Response(innerHex: string, salt: Uint8Array): string {
  return "md5" + md5hex(Buffer.concat([Buffer.from(innerHex), Buffer.from(salt)]));
}

export function md5Matches(innerHex: string, salt: Uint8Array, response: string): boolean {
  const expected = Buffer.from(md5Response(innerHex, salt));
  const got = Buffer.from(response);
  return expected.length === got.length && timingSafeEqual(expected, got);
}
