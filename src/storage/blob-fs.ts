// The blob store in a local directory (the data dir's blobs/), used when no S3 bucket is configured.
// A file is named by the SHA-256 of its key, so any key is a safe file name, and begins with a small header
// holding the key itself, so list() can give keys back. Writes go to a temp file that is fsynced and renamed
// into place: a reader sees the old blob or the whole new one, never a torn one, even after a crash.
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { checkBlobKey, checkListLimit, checkSize, chunked, compareKeyBytes, sizeMismatch, type BlobBody, type BlobEntry, type BlobStore } from "./blob.ts";
import { BlobError } from "../errors.ts";

// "KVB1" then the key length (u32 BE) then the key bytes, then the body.
const MAGIC = 0x4b564231;
const HEADER_FIXED = 8;
const WRITE_CHUNK = 1024 * 1024;
const READ_CHUNK = 256 * 1024;
const TEMP_PREFIX = ".tmp-";

export interface FsBlobOptions {
  /** Directory holding the blobs, e.g. `${dataDir}/blobs`. Created when missing. */
  dir: string;
}

export async function createFsBlobStore(opts: FsBlobOptions): Promise<BlobStore> {
  const root = opts.dir;
  await mkdir(root, { recursive: true });
  await removeStaleTemps(root);

  const fileOf = (key: string) => {
    const h = createHash("sha256").update(key, "utf8").digest("hex");
    return { dir: join(root, h.slice(0, 2)), path: join(root, h.slice(0, 2), h) };
  };

  async function put(key: string, body: BlobBody, size?: number) {
    const keyBytes = checkBlobKey(key);
    checkSize(size);
    const { dir, path } = fileOf(key);
    // a new fan-out directory is itself an entry of the root that must reach the disk
    if (await mkdir(dir, { recursive: true })) await syncDir(root);
    const temp = join(dir, TEMP_PREFIX + randomBytes(8).toString("hex"));
    const fh = await open(temp, "wx", 0o600);
    let ok = false;
    try {
      const header = new Uint8Array(HEADER_FIXED + keyBytes.length);
      const dv = new DataView(header.buffer);
      dv.setUint32(0, MAGIC);
      dv.setUint32(4, keyBytes.length);
      header.set(keyBytes, HEADER_FIXED);
      await writeFully(fh, header);
      let written = 0;
      for await (const piece of chunked(body, WRITE_CHUNK)) {
        written += piece.length;
        if (size !== undefined && written > size) throw sizeMismatch(key, size, written);
        await writeFully(fh, piece);
      }
      if (size !== undefined && written !== size) throw sizeMismatch(key, size, written);
      await fh.sync();
      ok = true;
    } finally {
      await fh.close();
      if (!ok) {
        await unlink(temp).catch(() => {});
        if (!(body instanceof Uint8Array)) await body.cancel().catch(() => {});
      }
    }
    await rename(temp, path);
    await syncDir(dir);
  }

  async function get(key: string): Promise<ReadableStream<Uint8Array> | null> {
    checkBlobKey(key);
    let fh: FileHandle;
    try {
      fh = await open(fileOf(key).path, "r");
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
    try {
      const header = await readHeader(fh);
      if (header.key !== key) throw new BlobError(`blob file for ${JSON.stringify(key)} holds ${JSON.stringify(header.key)}`);
      return fileStream(fh, header.bodyOffset);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async function del(key: string) {
    checkBlobKey(key);
    try {
      await unlink(fileOf(key).path);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  // A full scan of the headers: the directory is hashed, so there is no order to seek in. list() serves the
  // background orphan sweep, not requests, so this cost is paid off the request path.
  async function list(prefix: string, after?: string, limit?: number) {
    const max = checkListLimit(limit);
    const found: BlobEntry[] = [];
    for (const sub of await readdir(root)) {
      if (sub.startsWith(TEMP_PREFIX)) continue;
      let names: string[];
      try {
        names = await readdir(join(root, sub));
      } catch (e) {
        if (isNotFound(e) || (e as NodeJS.ErrnoException).code === "ENOTDIR") continue;
        throw e;
      }
      for (const name of names) {
        if (name.startsWith(TEMP_PREFIX)) continue;
        const entry = await readEntry(join(root, sub, name));
        if (!entry || !entry.key.startsWith(prefix)) continue;
        if (after !== undefined && compareKeyBytes(entry.key, after) <= 0) continue;
        found.push(entry);
      }
    }
    found.sort((a, b) => compareKeyBytes(a.key, b.key));
    const entries = found.slice(0, max);
    return { entries, next: found.length > max ? entries[entries.length - 1]!.key : undefined };
  }

  return { kind: "fs", put, get, delete: del, list, close: async () => {} };
}

async function readEntry(path: string): Promise<BlobEntry | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    if (isNotFound(e)) return null; // deleted while we listed
    throw e;
  }
  try {
    const { key, bodyOffset } = await readHeader(fh);
    const st = await fh.stat();
    return { key, size: st.size - bodyOffset, modified: st.mtimeMs };
  } catch (e) {
    if (e instanceof BlobError) return null; // not one of ours
    throw e;
  } finally {
    await fh.close();
  }
}

async function readHeader(fh: FileHandle): Promise<{ key: string; bodyOffset: number }> {
  const fixed = new Uint8Array(HEADER_FIXED);
  const { bytesRead } = await fh.read(fixed, 0, HEADER_FIXED, 0);
  const dv = new DataView(fixed.buffer);
  if (bytesRead < HEADER_FIXED || dv.getUint32(0) !== MAGIC) throw new BlobError("blob file has no KVB1 header");
  const keyLen = dv.getUint32(4);
  if (keyLen > 4 * 1024) throw new BlobError(`blob file header key length ${keyLen} is corrupt`);
  const keyBytes = new Uint8Array(keyLen);
  const r = await fh.read(keyBytes, 0, keyLen, HEADER_FIXED);
  if (r.bytesRead < keyLen) throw new BlobError("blob file header is truncated");
  return { key: new TextDecoder().decode(keyBytes), bodyOffset: HEADER_FIXED + keyLen };
}

// Reads through the handle opened by get(), so a concurrent replace or delete (both are renames/unlinks)
// cannot mix two blobs or cut one short: the open inode stays the old one until the stream ends.
function fileStream(fh: FileHandle, start: number): ReadableStream<Uint8Array> {
  let pos = start;
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await fh.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const buf = new Uint8Array(READ_CHUNK);
        const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, pos);
        if (bytesRead === 0) {
          await close();
          controller.close();
          return;
        }
        pos += bytesRead;
        controller.enqueue(buf.subarray(0, bytesRead));
      } catch (e) {
        await close().catch(() => {});
        controller.error(e);
      }
    },
    cancel: close,
  });
}

async function writeFully(fh: FileHandle, data: Uint8Array) {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off);
    off += bytesWritten;
  }
}

// The rename is durable only once the directory entry is on disk.
async function syncDir(dir: string) {
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

// A crash between write and rename leaves a temp file nobody will ever rename: remove those at start-up.
async function removeStaleTemps(root: string) {
  for (const sub of await readdir(root)) {
    const p = join(root, sub);
    if (!(await stat(p)).isDirectory()) continue;
    for (const name of await readdir(p)) if (name.startsWith(TEMP_PREFIX)) await rm(join(p, name), { force: true });
  }
}

const isNotFound = (e: unknown) => (e as NodeJS.ErrnoException)?.code === "ENOENT";
