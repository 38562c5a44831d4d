// Bearer-token check: 401 when the token is missing, 403 when it is wrong (code 10000 either way), compared in
// constant time (SHA-256 digests of equal length, so not even the token's length leaks). A failure is answered only after a delay (Postgres' auth_delay), so guessing is slow; the
// answers held back are bounded, and past the bound a failure is answered 429 at once instead of pinning more.
import { createHash, timingSafeEqual } from "node:crypto";
import { CODE } from "../errors.ts";
import { fail } from "./envelope.ts";

export interface AuthGateOptions {
  apiToken: string;
  /** KVDRIVE_AUTH_FAILURE_DELAY_MS */
  failureDelayMs: number;
  /** KVDRIVE_HTTP_AUTH_FAILURE_MAX_PENDING */
  maxPending: number;
}

export interface AuthGate {
  /** undefined when the request carries the token; otherwise the (possibly delayed) refusal. */
  check(req: Request): Promise<Response> | undefined;
  /** Refusals being held back right now (tests, metrics). */
  pending(): number;
}

export function authGate(o: AuthGateOptions): AuthGate {
  const digest = (b: string) => createHash("sha256").update(b).digest();
  const expected = digest(o.apiToken);
  let pending = 0;
  // The last accepted header, so a client sending the same header again skips the two digests. It is compared
  // without an early exit, in time that depends only on the length of the header received, so neither the
  // token nor its length leaks. Only an accepted header is remembered.
  let knownHeader: string | undefined;

  function refusal(req: Request): Response | undefined {
    const header = req.headers.get("authorization");
    if (!header) return fail(401, CODE.auth, "Authentication error: send the API token as 'Authorization: Bearer <token>'.");
    if (knownHeader !== undefined && sameInConstantTime(header, knownHeader)) return undefined;
    const m = /^Bearer +([^ ].*)$/i.exec(header);
    if (!m || !timingSafeEqual(digest(m[1]!.trim()), expected)) return fail(403, CODE.auth, "Authentication error: the API token is not valid.");
    knownHeader = header;
    return undefined;
  }

  function delayed(res: Response): Promise<Response> {
    if (o.failureDelayMs === 0) return Promise.resolve(res);
    if (pending >= o.maxPending) {
      const busy = fail(429, CODE.rateLimited, `Too many failed authentications at once: more than ${o.maxPending} (KVDRIVE_HTTP_AUTH_FAILURE_MAX_PENDING) are being delayed. Retry later.`);
      busy.headers.set("retry-after", "1");
      return Promise.resolve(busy);
    }
    pending++;
    return new Promise((resolve) =>
      setTimeout(() => {
        pending--;
        resolve(res);
      }, o.failureDelayMs),
    );
  }

  return {
    check(req) {
      const res = refusal(req);
      return res && delayed(res);
    },
    pending: () => pending,
  };
}

/** a === b, in time that depends on a's length only (b is never empty: it is an accepted header). */
function sameInConstantTime(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i % b.length);
  return diff === 0;
}
