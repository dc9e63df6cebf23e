/**
 * A short soak, the scenario `npm run soak` runs for 30 minutes: the demo swarm at 240 tasks a
 * minute against the product in its own process, pruning every 10 s. Its timing figures
 * (latency, prune pauses) are judged by `npm run soak`, not here: this machine's two cores are
 * shared with the rest of npm test.
 */
import { describe, expect, it } from "vitest";
import { runSoak } from "../../reliability/soak.js";

describe("soak", () => {
  it("keeps pace with memory and handles flat, latency steady, prunes without a stall", async () => {
    const report = await runSoak({
      durationMs: 45_000,
      pruneCron: "*/10 * * * * *",
      oldEvents: 20_000,
      sampleEveryMs: 5000,
      warmUpShare: 0.35,
      timingTargets: false,
    });
    expect(report.violations).toEqual([]);
    expect(report.tasksPosted).toBeGreaterThanOrEqual(150);
    expect(report.tasksCompleted).toBeGreaterThan(0);
    expect(report.toolCalls).toBeGreaterThan(0);
    expect(report.prunes.reduce((sum, prune) => sum + prune.deleted, 0)).toBe(20_000);
    expect(report.windows.length).toBeGreaterThan(5);
  }, 180_000);
});
