// Picks the large-value blob store from the config: S3 when KVDRIVE_S3_BUCKET is set, else the data dir's blobs/.
import { join } from "node:path";
import type { Config } from "../config.ts";
import type { BlobStore } from "./blob.ts";
import { createFsBlobStore } from "./blob-fs.ts";
import { createS3BlobStore, s3OptionsFromConfig } from "./blob-s3.ts";

export async function openBlobStore(cfg: Config): Promise<BlobStore> {
  const s3 = s3OptionsFromConfig(cfg);
  return s3 ? createS3BlobStore(s3) : createFsBlobStore({ dir: join(cfg.dataDir, "blobs") });
}
