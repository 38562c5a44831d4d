// The one error type that reaches HTTP clients: a status, a stable Cloudflare error code, and a message
// that names the value and the limit. Turned into the Cloudflare envelope in one place (src/http/envelope.ts).

export class KVError extends Error {
  override name = "KVError";
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export const isKVError = (e: unknown): e is KVError => e instanceof KVError;
