/**
 * Kill -9 under load, a short run of the scenario `npm run crash` runs at length: the product
 * in its own process, killed three times while agents and operators drive it.
 */
import { describe, expect, it } from "vitest";
import { runCrashScenario } from "../../reliability/crash.js";

describe("kill -9 under load", () => {
  it("keeps every acknowledged event, no duplicates or gaps, nothing stuck, interrupted auctions closed", async () => {
    const report = await runCrashScenario({ kills: 3, agents: 4, upMs: [400, 1200] });
    expect(report.violations, `seed ${report.seed}`).toEqual([]);
    expect(report.kills).toBe(3);
    // The run did real work across the kills: acknowledged writes and auctions cut off mid-way.
    expect(report.acknowledged).toBeGreaterThan(100);
    expect(report.interruptedAuctions).toBeGreaterThan(0);
    expect(report.events).toBeGreaterThanOrEqual(report.acknowledged);
  }, 120_000);
});
