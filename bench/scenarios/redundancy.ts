// Redundancy costs (active-active against primary-only, one backend slowed, the consistency harness's long
// form): the redundancy issue has not landed, so this scenario reports that instead of measuring anything.
import type { Scenario } from "../lib/context.ts";
import { notBuilt } from "../lib/result.ts";

const WHY = "the redundancy issue (active-active over several clusters) has not landed yet";

export const redundancy: Scenario = {
  name: "redundancy",
  title: "Redundancy costs: active-active vs primary-only, one backend slowed, consistency harness",
  quick: false,
  params: "not built yet",
  async run() {
    return {
      scenario: "redundancy",
      title: this.title,
      params: {},
      rows: [
        notBuilt("active-active vs primary-only: PUT and GET p50/p99", WHY),
        notBuilt("latency with one backend slowed (relay delay on one cluster)", WHY),
        notBuilt("consistency harness, long form: read-your-own-write violations, cross-instance staleness", WHY),
      ],
      ratios: [],
      notes: ["bench/lib/relay.ts (startRelay / setDelay) is ready to slow one backend when the feature lands."],
    };
  },
};
