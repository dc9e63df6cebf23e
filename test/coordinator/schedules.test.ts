import { describe, expect, it } from "vitest";
import {
  checkScheduleInput,
  firingAt,
  firstFiring,
  ScheduleInputError,
  type Schedule,
} from "../../src/coordinator/schedules.js";
import { DEFAULT_RULES } from "../../src/coordinator/types.js";

const AT = Date.parse("2026-03-01T12:00:00.000Z"); // a Sunday

function schedule(cron: string, nextFireAt: string | null, extra: Partial<Schedule> = {}): Schedule {
  const { task } = checkScheduleInput({ cron, task: { description: "nightly report" } }, DEFAULT_RULES);
  return {
    id: "s1",
    cron,
    timezone: "UTC",
    task,
    paused: false,
    next_fire_at: nextFireAt,
    last_fired_at: null,
    fired: 0,
    created_at: new Date(AT).toISOString(),
    ...extra,
  };
}

const fieldOf = (body: Parameters<typeof checkScheduleInput>[0]) => {
  try {
    checkScheduleInput(body, DEFAULT_RULES);
    return undefined;
  } catch (error) {
    return error instanceof ScheduleInputError ? error.field : String(error);
  }
};

describe("schedules", () => {
  it("fire first at the cron's next time, in the schedule's time zone", () => {
    expect(firstFiring("0 9 * * 1-5", "UTC", AT)).toBe("2026-03-02T09:00:00.000Z");
    expect(firstFiring("0 9 * * 1-5", "America/New_York", AT)).toBe("2026-03-02T14:00:00.000Z");
    // node-cron's six fields, seconds first.
    expect(firstFiring("*/10 * * * * *", "UTC", AT)).toBe("2026-03-01T12:00:10.000Z");
    expect(firstFiring("@daily", "UTC", AT)).toBe("2026-03-02T00:00:00.000Z");
  });

  it("are not due before their time, and due at it, standing for it, with the next one after", () => {
    const every5 = schedule("*/5 * * * *", "2026-03-01T12:05:00.000Z");
    expect(firingAt(every5, Date.parse("2026-03-01T12:04:59.999Z"))).toBeUndefined();
    expect(firingAt(every5, Date.parse("2026-03-01T12:05:00.000Z"))).toEqual({
      scheduled_for: "2026-03-01T12:05:00.000Z",
      next_fire_at: "2026-03-01T12:10:00.000Z",
      missed: 0,
    });
  });

  it("make up firings missed while the coordinator was down once, counting the rest", () => {
    const every5 = schedule("*/5 * * * *", "2026-03-01T12:05:00.000Z");
    expect(firingAt(every5, Date.parse("2026-03-01T12:31:00.000Z"))).toEqual({
      scheduled_for: "2026-03-01T12:05:00.000Z",
      next_fire_at: "2026-03-01T12:35:00.000Z",
      missed: 5,
    });
  });

  it("never fire while paused", () => {
    expect(firingAt(schedule("* * * * *", null, { paused: true }), AT + 3_600_000)).toBeUndefined();
  });

  it.each([
    [{ cron: "61 * * * *", task: { description: "x" } }, "cron"],
    [{ cron: "* * *", task: { description: "x" } }, "cron"],
    [{ cron: "* * * * * * *", task: { description: "x" } }, "cron"],
    [{ cron: "", task: { description: "x" } }, "cron"],
    [{ cron: "* * * * *", timezone: "Mars/Olympus", task: { description: "x" } }, "timezone"],
    [{ cron: "* * * * *" }, "task"],
    [{ cron: "* * * * *", task: { description: "" } }, "task.description"],
    [{ cron: "* * * * *", task: { description: "x", timeout_ms: 1 } }, "task.timeout_ms"],
    [{ cron: "* * * * *", task: { description: "x", depends_on: ["t1"] } }, "task.depends_on"],
    [{ cron: "* * * * *", task: { description: "x", assign_to: "a1" } }, "task.assign_to"],
  ])("refuse %j naming %s", (body, field) => {
    expect(fieldOf(body)).toBe(field);
  });

  it("keep the task body as a post would check it", () => {
    const { task, timezone } = checkScheduleInput(
      {
        cron: "0 * * * *",
        task: { description: " report ", required_capabilities: ["Writing"], timeout_ms: 5000 },
      },
      DEFAULT_RULES,
    );
    expect(timezone).toBe("UTC");
    expect(task).toMatchObject({
      description: "report",
      required_capabilities: ["writing"],
      timeout_ms: 5000,
      ack_ms: DEFAULT_RULES.defaultAckMs,
      max_attempts: 1,
    });
  });
});
