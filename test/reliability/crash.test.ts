/**
 * Kill -9 under load, a short run of the scenario `npm run crash` runs at length: the product
 * in its own process, killed three times while agents and operators drive it, on each engine
 * (on PostgreSQL, a fresh database of its own, with SWARM_DB=postgres://…); and the cluster's
 * version, three replicas on one PostgreSQL database, a random one killed each time.
 */
import { describe, expect, it } from "vitest";
import { runCrashScenario } from "../../reliability/crash.js";
import { ENGINES } from "../helpers/engines.js";
import { createTestDatabase, havePostgres } from "../helpers/postgres.js";

describe.each(ENGINES)("kill -9 under load on $name", (engine) => {
  it("keeps every acknowledged event, no duplicates or gaps, nothing stuck, interrupted auctions closed", async () => {
    const db = engine.name === "postgres" ? await createTestDatabase() : undefined;
    const report = await runCrashScenario({ kills: 3, agents: 4, upMs: [400, 1200], db });
    expect(report.violations, `seed ${report.seed}`).toEqual([]);
    expect(report.kills).toBe(3);
    // The run did real work across the kills: acknowledged writes and auctions cut off mid-way.
    expect(report.acknowledged).toBeGreaterThan(100);
    expect(report.interruptedAuctions).toBeGreaterThan(0);
    expect(report.events).toBeGreaterThanOrEqual(report.acknowledged);
  }, 120_000);
});

describe.skipIf(!havePostgres)("kill -9 of a replica under load, three replicas on PostgreSQL", () => {
  it("keeps every acknowledged event; the others close the auctions open at the kill within a second of their deadlines", async () => {
    const report = await runCrashScenario({
      kills: 3,
      agents: 4,
      upMs: [400, 1200],
      db: await createTestDatabase(),
      replicas: 3,
    });
    expect(report.violations, `seed ${report.seed}`).toEqual([]);
    expect(report.replicas).toBe(3);
    expect(report.acknowledged).toBeGreaterThan(100);
    // Auctions were open at the kills, so the survivors' closing them was put to the test.
    expect(report.interruptedAuctions).toBeGreaterThan(0);
    expect(report.latestCloseMs).not.toBeNull();
  }, 180_000);
});
