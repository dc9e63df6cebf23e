/**
 * The dashboard's pure parts (charts, event families, the live filter's matching): no storage,
 * so one engine is enough.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { eventMatches } from "../../src/storage/event-queries.js";
import { normalizeFilter } from "../../src/event-log/validate.js";
import {
  bidsPerAuctionChart,
  eventsPerMinuteChart,
  familyOf,
  niceCeiling,
  taskOutcomeChart,
} from "../../src/web/dashboard/charts.js";
import { describeEvent, relativeTime } from "../../src/web/dashboard/format.js";
import { MinuteCounter } from "../../src/web/dashboard/model.js";
import { openTestLog } from "../helpers/event-log.js";

describe("dashboard charts", () => {
  it("stack each minute's events by family, oldest minute first, on a round scale", () => {
    const now = new Date("2026-03-01T12:30:40Z");
    const chart = eventsPerMinuteChart(
      [
        { minute: "2026-03-01T12:30", event_type: "task.created", count: 3 },
        { minute: "2026-03-01T12:30", event_type: "bid.submitted", count: 9 },
        { minute: "2026-03-01T11:31", event_type: "deploy.finished", count: 2 },
        { minute: "2026-03-01T11:30", event_type: "task.created", count: 50 }, // outside the hour
      ],
      now,
    );
    expect(chart.bars).toHaveLength(60);
    expect(chart.bars[0]?.minute).toBe("2026-03-01T11:31");
    expect(chart.bars[59]).toMatchObject({ minute: "2026-03-01T12:30", total: 12 });
    expect(chart.bars[59]?.segments.map((s) => [s.family, s.count])).toEqual([
      ["task", 3],
      ["bid", 9],
    ]);
    expect(chart.bars[0]?.segments.map((s) => s.family)).toEqual(["other"]);
    expect(chart.total).toBe(14);
    expect(chart.max).toBe(20);
    const tallest = chart.bars[59]?.segments.reduce((sum, s) => sum + s.height, 0) ?? 0;
    expect(tallest).toBeCloseTo((12 / 20) * (chart.plotBottom - chart.plotTop), 0);
    expect(chart.legend.map((l) => l.family)).toEqual(["task", "bid", "other"]);
  });

  it("rounds axis tops to 1, 2 or 5 times a power of ten, and groups types by their first word", () => {
    expect([0, 1, 3, 12, 20, 21, 480, 5001].map(niceCeiling)).toEqual([1, 1, 5, 20, 20, 50, 500, 10000]);
    expect([familyOf("task.created"), familyOf("auction.closed"), familyOf("billing.sent")]).toEqual([
      "task",
      "auction",
      "other",
    ]);
  });

  it("scales outcome and auction bars to the largest", () => {
    const outcomes = taskOutcomeChart({
      waiting: 0,
      bidding: 0,
      assigned: 0,
      running: 1,
      completed: 4,
      failed: 2,
      cancelled: 0,
    });
    expect(outcomes.total).toBe(7);
    const completed = outcomes.bars.find((b) => b.status === "completed");
    const failed = outcomes.bars.find((b) => b.status === "failed");
    expect(failed?.width).toBeCloseTo((completed?.width ?? 0) / 2, 0);
    expect(outcomes.bars.find((b) => b.status === "bidding")?.width).toBe(0);
    const auctions = bidsPerAuctionChart([
      { task_id: "a", description: "a", status: "completed", attempt: 1, winning_bid_sats: 5, bids: 4 },
      { task_id: "b", description: "b", status: "failed", attempt: 1, winning_bid_sats: null, bids: 0 },
    ]);
    expect(auctions.max).toBe(5);
    expect(auctions.bars[0]?.height).toBeGreaterThan(auctions.bars[1]?.height ?? 0);
    expect(auctions.bars[1]?.height).toBe(1);
  });
});

describe("dashboard text", () => {
  it("says times relative to now, both ways", () => {
    const now = new Date("2026-03-01T12:00:00Z");
    expect(relativeTime("2026-03-01T12:00:00.500Z", now)).toBe("just now");
    expect(relativeTime("2026-03-01T11:59:48Z", now)).toBe("12s ago");
    expect(relativeTime("2026-03-01T11:55:00Z", now)).toBe("5m ago");
    expect(relativeTime("2026-02-27T12:00:00Z", now)).toBe("2d ago");
    expect(relativeTime("2026-03-01T12:00:04Z", now)).toBe("in 4s");
    expect(relativeTime(null, now)).toBe("");
  });

  it("describes events with agent names, and shows unknown types' data", () => {
    const names = new Map([["a1", "alpha"]]);
    const base = {
      seq: 1,
      id: "e",
      source: "x",
      task_id: "t",
      agent_id: "a1",
      timestamp: "2026-03-01T12:00:00Z",
    };
    expect(describeEvent({ ...base, event_type: "bid.submitted", data: { bid_sats: 1200 } }, names)).toBe(
      "alpha bid 1,200 sats",
    );
    expect(describeEvent({ ...base, event_type: "task.assigned", data: { bid_sats: 7 } }, names)).toBe(
      "assigned to alpha for 7 sats",
    );
    // The lifecycle's events say what happened in words, with why under best_value.
    expect(
      describeEvent(
        {
          ...base,
          event_type: "auction.closed",
          data: {
            bids: 2,
            winner: "a1",
            reason: "all bids in",
            award: "best_value",
            scores: [
              { agent_id: "a1", bid_sats: 100, reliability: 0.933, score: 107.143 },
              { agent_id: "zzzz-unknown-agent", bid_sats: 60, reliability: 0.462, score: 130 },
            ],
          },
        },
        names,
      ),
    ).toBe(
      "2 bid(s), won by alpha (all bids in); best value: alpha 100 sats ÷ 0.933 = 107.143, zzzz-…-agent 60 sats ÷ 0.462 = 130",
    );
    expect(
      describeEvent(
        {
          ...base,
          event_type: "task.award_expired",
          data: { ack_ms: 2000, expired_agent: "a1", next_agent: null },
        },
        names,
      ),
    ).toBe("alpha did not start within 2000 ms; no bid left, auctioned again");
    expect(describeEvent({ ...base, event_type: "task.timed_out", data: { timeout_ms: 500 } }, names)).toBe(
      "timed out after 500 ms on alpha",
    );
    expect(
      describeEvent(
        { ...base, event_type: "task.released", data: { reason: "stopping", attempt: 1 } },
        names,
      ),
    ).toBe("handed back by alpha: stopping; auctioned again");
    // As another agent sees it: the reason withheld.
    expect(describeEvent({ ...base, event_type: "task.released", data: { attempt: 1 } }, names)).toBe(
      "handed back by alpha; auctioned again",
    );
    expect(
      describeEvent(
        { ...base, event_type: "task.bidding", data: { attempt: 2, reason: "handed back by its agent" } },
        names,
      ),
    ).toBe("auction round 2 open (handed back by its agent)");
    expect(describeEvent({ ...base, event_type: "task.bidding", data: { attempt: 1 } }, names)).toBe(
      "auction round 1 open",
    );
    expect(describeEvent({ ...base, event_type: "deploy.finished", data: { env: "prod" } }, names)).toBe(
      '{"env":"prod"}',
    );
  });

  it("counts the last hour per minute, forgetting minutes that leave the window", () => {
    let now = new Date("2026-03-01T12:00:30Z");
    const counter = new MinuteCounter(
      [{ minute: "2026-03-01T11:10", event_type: "task.created", count: 4 }],
      () => now,
    );
    counter.add({
      seq: 1,
      id: "e",
      event_type: "bid.submitted",
      source: "x",
      task_id: null,
      agent_id: null,
      data: {},
      timestamp: "2026-03-01T12:00:10Z",
    });
    expect(counter.total()).toBe(5);
    now = new Date("2026-03-01T12:10:30Z");
    expect(counter.total()).toBe(1);
  });
});

describe("live filters", () => {
  it("decide exactly as the stored query does, for any filter and event", async () => {
    const log = openTestLog();
    const types = ["task.created", "bid.submitted", "deploy.finished"];
    const events = await log.logEvents(
      Array.from({ length: 60 }, (_, i) => ({
        event_type: types[i % 3] as string,
        source: i % 2 === 0 ? "ci" : "agent-1",
        task_id: i % 4 === 0 ? "t1" : null,
        agent_id: i % 5 === 0 ? "a1" : null,
        data: { note: ["Needle", "hay", 'quote "x"', "100%_sure", "back\\slash"][i % 5] },
        timestamp: new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString(),
      })),
    );
    const filter = fc.record(
      {
        types: fc.subarray(types),
        source: fc.constantFrom("ci", "agent-1"),
        task_id: fc.constant("t1"),
        agent_id: fc.constant("a1"),
        text: fc.constantFrom("needle", "HAY", '"x', "%_", "\\s", "100%"),
        since: fc.integer({ min: 0, max: 60 }).map((m) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString()),
        until: fc.integer({ min: 0, max: 60 }).map((m) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString()),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(filter, (f) => {
        const stored = log.listEvents({ ...f, limit: 1000 }).events.map((e) => e.seq);
        const normalized = normalizeFilter(f);
        expect(events.filter((e) => eventMatches(e, normalized)).map((e) => e.seq)).toEqual(stored);
      }),
      { numRuns: 300 },
    );
  });
});
