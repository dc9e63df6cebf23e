/**
 * Schedules through the REST API on both engines: each firing posts exactly one task, across a
 * restart and, on PostgreSQL, across two servers on one database firing at the same moment.
 */
import { describe, expect, it } from "vitest";
import { buildTestApp, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";
import { tempDir } from "../helpers/temp-dir.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

describe.each(ENGINES)("schedules on $name", ({ name: engine }) => {
  const build = (options: Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine"> = {}) =>
    buildTestApp<EngineName>({ ...options, engine });
  const call = async (
    t: TestApp<EngineName>,
    method: "GET" | "POST" | "DELETE",
    url: string,
    payload?: Record<string, unknown>,
    headers = t.operator,
  ) => {
    const response = await t.app.inject({
      method,
      url,
      headers,
      ...(payload === undefined ? {} : { payload }),
    });
    return { status: response.statusCode, body: response.json<Json>() };
  };
  const scheduledTasks = async (t: TestApp<EngineName>) =>
    ((await call(t, "GET", "/api/tasks?limit=200")).body.tasks as Json[]).filter(
      (task) => task.schedule_id !== null,
    );

  it("posts one task per firing, with schedule_id, and says so in the log", async () => {
    const t = await build();
    const made = await call(t, "POST", "/api/schedules", {
      cron: "*/5 * * * *",
      task: { description: "tidy the index", timeout_ms: 60_000 },
    });
    expect(made.status).toBe(201);
    const schedule = made.body.schedule as Json;
    expect(schedule).toMatchObject({
      cron: "*/5 * * * *",
      timezone: "UTC",
      paused: false,
      next_fire_at: "2026-03-01T12:05:00.000Z",
      fired: 0,
    });
    expect(await t.app.scheduler.fireDue()).toBe(0);
    t.clock.advance(5 * 60_000);
    expect(await t.app.scheduler.fireDue()).toBe(1);
    expect(await t.app.scheduler.fireDue()).toBe(0);
    const [task] = await scheduledTasks(t);
    expect(task).toMatchObject({
      schedule_id: schedule.id,
      description: "tidy the index",
      timeout_ms: 60_000,
    });
    const events = (await call(t, "GET", `/api/tasks/${task!.id as string}/events`)).body.events as Json[];
    expect(events.map((event) => event.event_type)).toEqual([
      "task.created",
      "task.bidding",
      "schedule.fired",
    ]);
    expect(events[0]!.data).toMatchObject({ schedule_id: schedule.id });
    expect(events[2]!.data).toMatchObject({
      schedule_id: schedule.id,
      scheduled_for: "2026-03-01T12:05:00.000Z",
      missed_firings: 0,
    });
    expect((await call(t, "GET", `/api/schedules/${schedule.id as string}`)).body.schedule).toMatchObject({
      fired: 1,
      last_fired_at: "2026-03-01T12:05:00.000Z",
      next_fire_at: "2026-03-01T12:10:00.000Z",
    });
  });

  it("pauses, resumes from the next firing after now, and deletes, each logged", async () => {
    const t = await build();
    const id = (
      await call(t, "POST", "/api/schedules", { cron: "0 * * * *", task: { description: "hourly" } })
    ).body.schedule.id as string;
    expect((await call(t, "POST", `/api/schedules/${id}/pause`)).body.schedule).toMatchObject({
      paused: true,
      next_fire_at: null,
    });
    t.clock.advance(3 * 3_600_000);
    expect(await t.app.scheduler.fireDue()).toBe(0);
    expect((await call(t, "POST", `/api/schedules/${id}/resume`)).body.schedule).toMatchObject({
      paused: false,
      next_fire_at: "2026-03-01T16:00:00.000Z",
    });
    expect((await call(t, "GET", "/api/schedules")).body.schedules).toHaveLength(1);
    expect((await call(t, "DELETE", `/api/schedules/${id}`)).status).toBe(200);
    expect((await call(t, "GET", `/api/schedules/${id}`)).body.error.code).toBe("SCHEDULE_NOT_FOUND");
    expect((await call(t, "POST", `/api/schedules/${id}/pause`)).status).toBe(404);
    const types = (
      (
        await call(
          t,
          "GET",
          "/api/events?type=schedule.created,schedule.paused,schedule.resumed,schedule.deleted",
        )
      ).body.events as Json[]
    ).map((event) => event.event_type);
    expect(types).toEqual(["schedule.created", "schedule.paused", "schedule.resumed", "schedule.deleted"]);
    t.clock.advance(3_600_000);
    expect(await t.app.scheduler.fireDue()).toBe(0);
  });

  it.each([
    [{ cron: "61 * * * *", task: { description: "x" } }, "cron"],
    [{ cron: "* * * * *", timezone: "Nowhere/City", task: { description: "x" } }, "timezone"],
    [{ cron: "* * * * *", task: { description: "x", max_attempts: 0 } }, "task.max_attempts"],
    [{ cron: "* * * * *", task: { description: "x", depends_on: ["a"] } }, "depends_on"],
    [{ cron: "* * * * *" }, "task"],
  ])("refuses %j naming %s, writing nothing", async (body, field) => {
    const t = await build();
    const before = await t.eventLog.latestSeq();
    const refused = await call(t, "POST", "/api/schedules", body);
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body.error)).toContain(field);
    expect((await call(t, "GET", "/api/schedules")).body.schedules).toEqual([]);
    expect(await t.eventLog.latestSeq()).toBe(before);
  });

  it("keeps its next firing across a restart and makes up a missed one once", async () => {
    const dir = tempDir();
    const first = await build(engine === "sqlite" ? { path: `${dir}/swarm.db` } : {});
    await call(first, "POST", "/api/schedules", { cron: "*/5 * * * *", task: { description: "tick" } });
    await first.app.close();
    await first.coordinator.stop();
    const second = await build(engine === "sqlite" ? { path: `${dir}/swarm.db` } : { url: first.url! });
    second.clock.advance(17 * 60_000); // 12:05, 12:10 and 12:15 went by while it was down
    expect(await second.app.scheduler.fireDue()).toBe(1);
    expect(await second.app.scheduler.fireDue()).toBe(0);
    const [schedule] = (await call(second, "GET", "/api/schedules")).body.schedules as Json[];
    expect(schedule).toMatchObject({ fired: 1, next_fire_at: "2026-03-01T12:20:00.000Z" });
    const fired = (await call(second, "GET", "/api/events?type=schedule.fired")).body.events as Json[];
    expect(fired.map((event) => event.data)).toMatchObject([
      { scheduled_for: "2026-03-01T12:05:00.000Z", missed_firings: 2 },
    ]);
  });

  it.runIf(engine === "postgres")("fires once when two servers on one database fire together", async () => {
    const first = await build();
    const second = await build({ url: first.url! });
    await call(first, "POST", "/api/schedules", {
      cron: "* * * * * *",
      task: { description: "every second" },
    });
    for (let round = 1; round <= 10; round += 1) {
      first.clock.advance(1000);
      second.clock.advance(1000);
      const fired = await Promise.all([first.app.scheduler.fireDue(), second.app.scheduler.fireDue()]);
      expect(fired[0] + fired[1]).toBe(1);
    }
    const tasks = await scheduledTasks(first);
    expect(tasks).toHaveLength(10);
    const [schedule] = (await call(second, "GET", "/api/schedules")).body.schedules as Json[];
    expect(schedule).toMatchObject({ fired: 10 });
  });
});
