// KVClient: the Workers `KVNamespace` binding (get/getWithMetadata/put/delete/list) over kvdrive's HTTP API,
// so Worker code runs unchanged against kvdrive.

export interface KVClientOptions {
  baseURL: string; // e.g. http://127.0.0.1:8787/client/v4
  apiToken: string;
  accountId: string;
  namespaceId: string;
  fetch?: typeof fetch;
}

type ValueType = "text" | "json" | "arrayBuffer" | "stream";
type GetOptions<T extends ValueType = ValueType> = { type?: T; cacheTtl?: number };
type Metadata = unknown;

export interface KVListKey {
  name: string;
  expiration?: number;
  metadata?: Metadata;
}
export type KVListResult = { keys: KVListKey[]; cacheStatus: string | null } & ({ list_complete: false; cursor: string } | { list_complete: true });

export class KVClientError extends Error {
  override name = "KVClientError";
  constructor(
    readonly status: number,
    readonly code: number | undefined,
    message: string,
  ) {
    super(message);
  }
}

export class KVClient {
  readonly #base: string;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;

  constructor(opts: KVClientOptions) {
    this.#base = `${opts.baseURL.replace(/\/$/, "")}/accounts/${encodeURIComponent(opts.accountId)}/storage/kv/namespaces/${encodeURIComponent(opts.namespaceId)}`;
    this.#headers = { authorization: `Bearer ${opts.apiToken}` };
    this.#fetch = opts.fetch ?? fetch;
  }

  async #request(path: string, init: RequestInit = {}): Promise<Response> {
    const res = await this.#fetch(`${this.#base}${path}`, { ...init, headers: { ...this.#headers, ...(init.headers as Record<string, string> | undefined) } });
    if (!res.ok && res.status !== 404) throw await clientError(res);
    return res;
  }

  async #envelope<T>(path: string, init?: RequestInit): Promise<T> {
    const res = await this.#request(path, init);
    if (!res.ok) throw await clientError(res);
    return ((await res.json()) as { result: T }).result;
  }

  get(key: string, options?: ValueType | GetOptions): Promise<any>;
  get(keys: string[], options?: ValueType | GetOptions): Promise<Map<string, any>>;
  async get(key: string | string[], options?: ValueType | GetOptions): Promise<any> {
    const { type, cacheTtl } = normalize(options);
    if (Array.isArray(key)) {
      return this.#bulkGet(key, type, false);
    }
    const res = await this.#request(`/values/${encodeURIComponent(key)}${cacheTtl ? `?cache_ttl=${cacheTtl}` : ""}`);
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    return decodeAs(res, type);
  }

  getWithMetadata(key: string, options?: ValueType | GetOptions): Promise<{ value: any; metadata: any; cacheStatus: string | null }>;
  getWithMetadata(keys: string[], options?: ValueType | GetOptions): Promise<Map<string, { value: any; metadata: any } | null>>;
  async getWithMetadata(key: string | string[], options?: ValueType | GetOptions): Promise<any> {
    const { type } = normalize(options);
    if (Array.isArray(key)) return this.#bulkGet(key, type, true);
    const value = await this.get(key, options);
    if (value === null) return { value: null, metadata: null, cacheStatus: null };
    const meta = await this.#request(`/metadata/${encodeURIComponent(key)}`);
    const metadata = meta.ok ? ((await meta.json()) as { result: unknown }).result : null;
    return { value, metadata: metadata ?? null, cacheStatus: null };
  }

  async #bulkGet(keys: string[], type: ValueType, withMetadata: boolean): Promise<Map<string, unknown>> {
    if (type !== "text" && type !== "json") throw new TypeError(`KVClient: get of several keys supports type "text" or "json", not ${JSON.stringify(type)}`);
    const out = new Map<string, unknown>();
    for (let i = 0; i < keys.length; i += 100) {
      const chunk = keys.slice(i, i + 100);
      const r = await this.#envelope<{ values: Record<string, unknown> }>("/bulk/get", { method: "POST", body: JSON.stringify({ keys: chunk, type, withMetadata }), headers: { "content-type": "application/json" } });
      for (const k of chunk) {
        const v = r.values[k] ?? null;
        out.set(k, withMetadata && v !== null ? { value: (v as any).value, metadata: (v as any).metadata ?? null } : v);
      }
    }
    return out;
  }

  async put(key: string, value: string | ArrayBuffer | ArrayBufferView | ReadableStream, options: { expiration?: number; expirationTtl?: number; metadata?: Metadata | null } = {}): Promise<void> {
    const q = new URLSearchParams();
    if (options.expiration !== undefined) q.set("expiration", String(options.expiration));
    if (options.expirationTtl !== undefined) q.set("expiration_ttl", String(options.expirationTtl));
    const qs = q.size ? `?${q}` : "";
    let body: Blob | FormData | ReadableStream | string | ArrayBuffer | Uint8Array;
    if (options.metadata !== undefined && options.metadata !== null) {
      const form = new FormData();
      form.set("value", new Blob([await bytesOf(value)]));
      form.set("metadata", JSON.stringify(options.metadata));
      body = form;
    } else body = value instanceof ReadableStream || typeof value === "string" ? value : ArrayBuffer.isView(value) ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value;
    const res = await this.#request(`/values/${encodeURIComponent(key)}${qs}`, { method: "PUT", body, headers: body instanceof FormData ? {} : { "content-type": "application/octet-stream" } });
    if (!res.ok) throw await clientError(res);
    await res.body?.cancel();
  }

  async delete(key: string): Promise<void> {
    const res = await this.#request(`/values/${encodeURIComponent(key)}`, { method: "DELETE" });
    if (!res.ok) throw await clientError(res);
    await res.body?.cancel();
  }

  async list(options: { prefix?: string | null; limit?: number; cursor?: string | null } = {}): Promise<KVListResult> {
    const q = new URLSearchParams();
    if (options.prefix) q.set("prefix", options.prefix);
    if (options.limit !== undefined) q.set("limit", String(options.limit));
    if (options.cursor) q.set("cursor", options.cursor);
    const res = await this.#request(`/keys${q.size ? `?${q}` : ""}`);
    if (!res.ok) throw await clientError(res);
    const body = (await res.json()) as { result: KVListKey[]; result_info: { cursor: string } };
    const cursor = body.result_info?.cursor ?? "";
    return cursor ? { keys: body.result, list_complete: false, cursor, cacheStatus: null } : { keys: body.result, list_complete: true, cacheStatus: null };
  }
}

function normalize(options: ValueType | GetOptions | undefined): { type: ValueType; cacheTtl?: number } {
  if (typeof options === "string") return { type: options };
  return { type: options?.type ?? "text", cacheTtl: options?.cacheTtl };
}

async function decodeAs(res: Response, type: ValueType): Promise<unknown> {
  switch (type) {
    case "text":
      return res.text();
    case "json":
      return res.json();
    case "arrayBuffer":
      return res.arrayBuffer();
    case "stream":
      return res.body;
  }
}

async function bytesOf(value: string | ArrayBuffer | ArrayBufferView | ReadableStream): Promise<Uint8Array> {
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (value instanceof ReadableStream) return new Uint8Array(await new Response(value).arrayBuffer());
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(value);
}

async function clientError(res: Response): Promise<KVClientError> {
  let code: number | undefined;
  let message = `KV request failed with status ${res.status}`;
  try {
    const body = (await res.json()) as { errors?: Array<{ code: number; message: string }> };
    if (body.errors?.[0]) ({ code, message } = body.errors[0]);
  } catch {
    // Not an envelope: keep the status line.
  }
  return new KVClientError(res.status, code, message);
}
