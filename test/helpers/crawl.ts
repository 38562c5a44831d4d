// Runs one anti-entropy pass over HTTP: POST /admin/kv/crawl starts it in the background (202), and
// GET /admin/kv/crawl is polled until it is no longer running.
export interface CrawlStatus {
  state: "idle" | "running" | "done" | "failed";
  id: number;
  result: unknown;
  error: string | null;
}

export async function crawlPass(httpUrl: string, token: string, timeoutMs = 120_000): Promise<CrawlStatus> {
  const headers = { authorization: `Bearer ${token}` };
  const started = await fetch(`${httpUrl}/admin/kv/crawl`, { method: "POST", headers });
  if (started.status !== 202) throw new Error(`POST /admin/kv/crawl answered ${started.status}: ${await started.text()}`);
  let status = ((await started.json()) as { result: CrawlStatus }).result;
  const until = Date.now() + timeoutMs;
  while (status.state === "running") {
    if (Date.now() > until) throw new Error(`crawler pass ${status.id} still running after ${timeoutMs} ms`);
    await Bun.sleep(50);
    status = ((await (await fetch(`${httpUrl}/admin/kv/crawl`, { headers })).json()) as { result: CrawlStatus }).result;
  }
  return status;
}
