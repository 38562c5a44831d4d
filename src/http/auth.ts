// Bearer-token check: 401 when the token is missing, 403 when it is wrong. Constant-time comparison.
import { timingSafeEqual } from "node:crypto";
import { CODE } from "../kv/codes.ts";
import { fail } from "./envelope.ts";

export function bearerCheck(apiToken: string): (req: Request) => Response | undefined {
  const expected = Buffer.from(apiToken);
  return (req) => {
    const header = req.headers.get("authorization");
    if (!header) return fail(401, CODE.auth, "Authentication error: send the API token as 'Authorization: Bearer <token>'.");
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m ? Buffer.from(m[1]!.trim()) : Buffer.alloc(0);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return fail(403, CODE.auth, "Authentication error: the API token is not valid.");
    return undefined;
  };
}
