// The pure core's caps, as decide.test.ts tests the rest of it: no storage, so no engine to run on.
import { describe, expect, it } from "vitest";
import { limitRefusal, secondsToNextHour } from "../../src/coordinator/limits.js";
import type { Command } from "../../src/coordinator/types.js";

const NOW = new Date("2026-03-01T12:59:59.250Z");
const RULES = { maxEventsPerTask: 100, maxAgentBytesPerHour: 10_000 };
const TOOL: Command = {
  type: "RecordToolCall",
  task_id: "t1",
  agent_id: "a1",
  tool: "grep",
  phase: "called",
};
const BID: Command = { type: "SubmitBid", task_id: "t1", agent_id: "a1", bid_sats: 5 };
const ONE_EVENT = { events: 1, bytes: 800 };

describe("the caps on what agents report", () => {
  it("given a task one report past its cap, when a tool report or a bid brought it there, then it is refused naming the cap", () => {
    for (const command of [TOOL, BID]) {
      expect(
        limitRefusal(command, ONE_EVENT, { taskEvents: 101, agentBytes: 800 }, RULES, NOW),
      ).toMatchObject({
        code: "TASK_EVENTS_CAP_REACHED",
        details: { limit: "SWARM_MAX_EVENTS_PER_TASK", max_events_per_task: 100, task_id: "t1" },
      });
    }
    expect(limitRefusal(TOOL, ONE_EVENT, { taskEvents: 100, agentBytes: 800 }, RULES, NOW)).toBeUndefined();
  });

  it("given an agent past its hourly bytes, when it reports, then it is refused with the seconds to the next hour", () => {
    const refusal = limitRefusal(TOOL, ONE_EVENT, { taskEvents: 3, agentBytes: 10_001 }, RULES, NOW);
    expect(refusal).toMatchObject({
      code: "AGENT_HOURLY_BYTES_EXCEEDED",
      details: {
        limit: "SWARM_MAX_AGENT_BYTES_PER_HOUR",
        max_bytes_per_hour: 10_000,
        used_bytes: 9201,
        report_bytes: 800,
        retry_after_seconds: 1,
      },
    });
    expect(refusal?.message).toContain("SWARM_MAX_AGENT_BYTES_PER_HOUR=10000");
    expect(limitRefusal(TOOL, ONE_EVENT, { taskEvents: 3, agentBytes: 10_000 }, RULES, NOW)).toBeUndefined();
  });

  it("given both caps passed, then the task's is named: waiting an hour would not lift it", () => {
    expect(limitRefusal(TOOL, ONE_EVENT, { taskEvents: 101, agentBytes: 99_999 }, RULES, NOW)?.code).toBe(
      "TASK_EVENTS_CAP_REACHED",
    );
  });

  it("never refuses starting, completing or failing a task, nor what the coordinator or the operator does", () => {
    const over = { taskEvents: 1_000, agentBytes: 1_000_000 };
    const commands: Command[] = [
      { type: "StartTask", task_id: "t1", agent_id: "a1" },
      { type: "CompleteTask", task_id: "t1", agent_id: "a1" },
      { type: "FailTask", task_id: "t1", agent_id: "a1" },
      { type: "FailTask", task_id: "t1" },
      { type: "CancelTask", task_id: "t1" },
      { type: "CloseAuction", task_id: "t1" },
      { type: "Tick" },
    ];
    for (const command of commands)
      expect(limitRefusal(command, ONE_EVENT, over, RULES, NOW)).toBeUndefined();
  });

  it("refuses nothing with the caps off, nor a command that wrote no event of the agent's", () => {
    const over = { taskEvents: 1_000, agentBytes: 1_000_000 };
    const off = { maxEventsPerTask: false, maxAgentBytesPerHour: false } as const;
    expect(limitRefusal(TOOL, ONE_EVENT, over, off, NOW)).toBeUndefined();
    expect(limitRefusal(BID, { events: 0, bytes: 0 }, over, RULES, NOW)).toBeUndefined();
  });

  it("counts the seconds to the next clock hour, at least one", () => {
    expect(secondsToNextHour(new Date("2026-03-01T12:00:00.000Z"))).toBe(3600);
    expect(secondsToNextHour(new Date("2026-03-01T12:20:35.500Z"))).toBe(2365);
    expect(secondsToNextHour(new Date("2026-03-01T12:59:59.999Z"))).toBe(1);
  });
});
