// Versions (src/storage/entry.ts, src/gateway/version.ts): comparing two versions and taking the next one from the hybrid logical clock.
import { bench, do_not_optimize, group, summary } from "mitata";
import { requireModules, runMicro } from "../lib/micro.ts";

if (requireModules(["src/storage/entry.ts", "src/gateway/version.ts", "src/clock.ts"])) {
  const { compareVersions } = await import("../../src/storage/entry.ts");
  const { createVersionClock } = await import("../../src/gateway/version.ts");
  const { systemClock } = await import("../../src/clock.ts");
  const hlc = createVersionClock(systemClock);
  const vs = Array.from({ length: 1024 }, () => hlc.next());
  let i = 0;
  summary(() => {
    group("versions", () => {
      bench("compareVersions", () => do_not_optimize(compareVersions(vs[i++ & 1023]!, vs[(i * 7) & 1023]!)));
      bench("HLC next()", () => do_not_optimize(hlc.next()));
    });
  });
  await runMicro();
}
