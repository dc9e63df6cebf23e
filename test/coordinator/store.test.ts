import { describe, expect, it } from "vitest";
import { STORE_SQL } from "../../src/coordinator/store.js";
import { openTestLog } from "../helpers/event-log.js";

describe("coordinator store query plans", () => {
  it("reads tasks and bids through indexes; only loading every agent at start scans", () => {
    const log = openTestLog();
    const params: Partial<Record<keyof typeof STORE_SQL, unknown[]>> = {
      taskById: ["t"],
      agentById: ["a"],
      bidsOfTask: ["t"],
      agentBidStats: ["a"],
      agentTaskStats: ["a"],
    };
    for (const [name, sql] of Object.entries(STORE_SQL) as [keyof typeof STORE_SQL, string][]) {
      if (name.startsWith("upsert") || name === "allAgents") continue;
      const details = (
        log.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...(params[name] ?? [])) as { detail: string }[]
      ).map((row) => row.detail);
      expect(
        details.filter((detail) => /^SCAN (tasks|bids|t|b)\b/.test(detail)),
        `${name}: ${details.join(" | ")}`,
      ).toEqual([]);
    }
  });
});
