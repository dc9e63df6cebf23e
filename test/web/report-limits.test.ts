import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import { loadMigrations, openDatabase } from "../../src/storage/sqlite/database.js";
import { buildTestApp, type EngineName } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";
import { openTestLog } from "../helpers/event-log.js";
import { tempDir } from "../helpers/temp-dir.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

/** Every field of a tool report at its longest: what an agent filling the log as fast as it may sends. */
const HEAVY_REPORT = {
  tool: "t".repeat(100),
  phase: "called",
  input: "i".repeat(5000),
  output: "o".repeat(5000),
  error: "e".repeat(10_000),
};

/** An app on `engine` whose one agent holds one running task, under the given caps. */
async function runningTask(engine: EngineName, rules: Partial<CoordinatorRules>) {
  const t = await buildTestApp<EngineName>({ engine, rules: { closeWhenAllBid: false, ...rules } });
  const agent = await t.agent("worker", { max_concurrent: 2 });
  const task = await t.task({ auction_ms: 1000 });
  expect((await t.bid(agent, task, 10)).statusCode).toBe(201);
  t.clock.advance(1000);
  await t.tick();
  const start = await t.app.inject({ method: "POST", url: `/api/tasks/${task}/start`, headers: agent.auth });
  expect(start.statusCode).toBe(200);
  const tool = (body: Record<string, unknown> = { tool: "grep", phase: "called" }, who = agent) =>
    t.app.inject({ method: "POST", url: `/api/tasks/${task}/tools`, headers: who.auth, payload: body });
  const column = async (sql: string, ...params: unknown[]) => {
    const value = Object.values((await t.sql(sql, ...params))[0] ?? {})[0];
    // PostgreSQL hands bigint and SUM as strings.
    return value === undefined || value === null ? undefined : Number(value);
  };
  const reportedEvents = async (taskId = task) =>
    (await column("SELECT reported_events FROM tasks WHERE id = ?", taskId)) as number;
  const usage = async (agentId = agent.id) =>
    (await column("SELECT bytes FROM agent_report_usage WHERE agent_id = ?", agentId)) ?? 0;
  /** The bytes of an agent's own events as the table holds them, counted by the database, not by the code under test. */
  const byteLength = (column: string) =>
    engine === "sqlite"
      ? `IFNULL(length(CAST(${column} AS BLOB)), 0)`
      : `COALESCE(octet_length(${column}::text), 0)`;
  const storedBytes = async (agentId = agent.id) =>
    (await column(
      `SELECT COALESCE(SUM(${["id", "event_type", "source", "task_id", "agent_id", "data", "timestamp"]
        .map(byteLength)
        .join(" + ")}), 0) FROM event_log WHERE source = ?`,
      agentId,
    )) as number;
  return { ...t, worker: agent, taskId: task, tool, reportedEvents, usage, storedBytes };
}

/** Heavy reports until one is refused (at most 100, well past the test budget): how many went in, and the refusal. */
async function reportUntilRefused(tool: (body: Record<string, unknown>) => Promise<Response>) {
  for (let accepted = 0; accepted < 100; accepted += 1) {
    const answer = await tool(HEAVY_REPORT);
    if (answer.statusCode !== 201) return { accepted, refused: answer };
  }
  throw new Error("100 heavy reports went in: the byte budget never refused one");
}

type Response = Awaited<ReturnType<Awaited<ReturnType<typeof runningTask>>["tool"]>>;

describe.each(ENGINES)(
  "the cap on events per task (SWARM_MAX_EVENTS_PER_TASK) on $name",
  ({ name: engine }) => {
    it("refuses the tool report past it with 409 naming the cap and its value, writing nothing; the task can still complete", async () => {
      // The bid and the start are the first two of the six.
      const t = await runningTask(engine, { maxEventsPerTask: 6 });
      for (let i = 0; i < 4; i += 1) expect((await t.tool()).statusCode, `report ${i}`).toBe(201);
      expect(await t.reportedEvents()).toBe(6);
      const before = { seq: await t.eventLog.latestSeq(), usage: await t.usage() };

      const refused = await t.tool({ tool: "grep", phase: "called", call_id: "call-7" });

      expect(refused.statusCode).toBe(409);
      expect(refused.json<Json>().error).toEqual({
        code: "TASK_EVENTS_CAP_REACHED",
        message: expect.stringContaining("SWARM_MAX_EVENTS_PER_TASK=6") as string,
        details: { limit: "SWARM_MAX_EVENTS_PER_TASK", max_events_per_task: 6, task_id: t.taskId },
      });
      expect(await t.eventLog.latestSeq()).toBe(before.seq);
      expect(await t.reportedEvents()).toBe(6);
      expect(await t.usage()).toBe(before.usage);
      // The same call_id again is refused the same way: the refusal left nothing to replay.
      expect((await t.tool({ tool: "grep", phase: "called", call_id: "call-7" })).statusCode).toBe(409);

      // Ending is never refused, so a task at its cap is not stranded.
      const done = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${t.taskId}/complete`,
        headers: t.worker.auth,
        payload: { result: "done" },
      });
      expect(done.statusCode).toBe(200);
      expect(done.json<Json>().task.status).toBe("completed");
    });

    it("counts bids too: a bid past it is refused 409, and the coordinator still closes the auction", async () => {
      const t = await buildTestApp<EngineName>({
        engine,
        rules: { closeWhenAllBid: false, maxEventsPerTask: 3 },
      });
      const agent = await t.agent("haggler");
      const task = await t.task({ auction_ms: 1000 });
      for (const sats of [30, 20, 10]) expect((await t.bid(agent, task, sats)).statusCode).toBe(201);
      const refused = await t.bid(agent, task, 5);
      expect(refused.statusCode).toBe(409);
      expect(refused.json<Json>().error).toMatchObject({
        code: "TASK_EVENTS_CAP_REACHED",
        details: { limit: "SWARM_MAX_EVENTS_PER_TASK", max_events_per_task: 3 },
      });
      expect((await t.coordinator.openBids(task)).map((bid) => bid.bid_sats)).toEqual([10]);
      // The same amount again is a retry that writes nothing, and is answered as one.
      expect((await t.bid(agent, task, 10)).statusCode).toBe(200);

      t.clock.advance(1000);
      await t.tick();
      expect(await t.coordinator.getTask(task)).toMatchObject({ status: "assigned", winning_bid_sats: 10 });
      const closes = (
        await t.eventLog.listEvents({
          task_id: task,
          types: ["auction.closed", "task.assigned"],
        })
      ).events;
      expect(closes.map((event) => event.event_type)).toEqual(["auction.closed", "task.assigned"]);
    });

    it("leaves a task's reports alone under it, and counts each task apart", async () => {
      const t = await runningTask(engine, { maxEventsPerTask: 50 });
      for (let i = 0; i < 48; i += 1) expect((await t.tool()).statusCode, `report ${i}`).toBe(201);
      expect(await t.reportedEvents()).toBe(50);
      // Another task of the same agent starts from nothing.
      const other = await t.task({ auction_ms: 1000 });
      expect((await t.bid(t.worker, other, 10)).statusCode).toBe(201);
      expect(await t.reportedEvents(other)).toBe(1);
    });
  },
);

describe.each(ENGINES)(
  "the cap on stored bytes per agent per hour (SWARM_MAX_AGENT_BYTES_PER_HOUR) on $name",
  ({ name: engine }) => {
    const BUDGET = 20_000;

    it("refuses the report that would pass it with 429, Retry-After to the next hour, writing nothing", async () => {
      const t = await runningTask(engine, { maxAgentBytesPerHour: BUDGET });
      t.clock.advance(1_234_500); // 12:20:35.5 on the fake clock (the auction took a second): 2,364.5 s to the hour
      const { accepted, refused } = await reportUntilRefused(t.tool);
      // Several reports fit, and what they stored is exactly what was counted, within the budget.
      expect(accepted).toBeGreaterThan(5);
      expect(await t.usage()).toBe(await t.storedBytes());
      expect(await t.storedBytes()).toBeLessThanOrEqual(BUDGET);
      const before = {
        seq: await t.eventLog.latestSeq(),
        usage: await t.usage(),
        events: await t.reportedEvents(),
      };

      expect(refused.statusCode).toBe(429);
      expect(refused.headers["retry-after"]).toBe("2365");
      const error = refused.json<Json>().error;
      expect(error).toMatchObject({
        code: "AGENT_HOURLY_BYTES_EXCEEDED",
        details: {
          limit: "SWARM_MAX_AGENT_BYTES_PER_HOUR",
          max_bytes_per_hour: BUDGET,
          used_bytes: before.usage,
          retry_after_seconds: 2365,
        },
      });
      expect(error.message).toContain(`SWARM_MAX_AGENT_BYTES_PER_HOUR=${BUDGET}`);
      expect(error.message).toContain(t.worker.id);
      expect(error.details.used_bytes + error.details.report_bytes).toBeGreaterThan(BUDGET);

      // Refused again while the hour lasts, with nothing written either time.
      t.clock.advance(2_000_000);
      expect((await t.tool(HEAVY_REPORT)).statusCode).toBe(429);
      expect(await t.eventLog.latestSeq()).toBe(before.seq);
      expect({ usage: await t.usage(), events: await t.reportedEvents() }).toEqual({
        usage: before.usage,
        events: before.events,
      });

      // A new hour, a new budget.
      t.clock.advance(366_000);
      expect((await t.tool(HEAVY_REPORT)).statusCode).toBe(201);
      expect(await t.usage()).toBeLessThan(before.usage);
    });

    it("is one agent's alone: another agent reporting beside a refused one is untouched", async () => {
      const t = await runningTask(engine, { maxAgentBytesPerHour: BUDGET });
      expect((await reportUntilRefused(t.tool)).refused.statusCode).toBe(429);
      const other = await t.agent("other");
      const task = await t.task({ auction_ms: 1000 });
      expect((await t.bid(other, task, 10)).statusCode).toBe(201);
      expect(await t.usage(other.id)).toBe(await t.storedBytes(other.id));
      // The refused agent may still end its task: ends are counted, never refused.
      const failed = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${t.taskId}/fail`,
        headers: t.worker.auth,
        payload: { reason: "gave up" },
      });
      expect(failed.statusCode).toBe(200);
      expect(await t.usage()).toBeGreaterThan(BUDGET);
    });

    it("leaves an honest agent untouched at the defaults: a long task's reports all go in, counted exactly", async () => {
      const t = await runningTask(engine, {});
      for (let call = 0; call < 300; call += 1) {
        const callId = `call-${call}`;
        const input = { path: `src/module-${call}.ts`, pattern: "TODO" };
        expect((await t.tool({ tool: "grep", phase: "called", call_id: callId, input })).statusCode).toBe(
          201,
        );
        const output = { matches: call % 7, first: `src/module-${call}.ts:12: // TODO tidy` };
        expect((await t.tool({ tool: "grep", phase: "completed", call_id: callId, output })).statusCode).toBe(
          201,
        );
      }
      const done = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${t.taskId}/complete`,
        headers: t.worker.auth,
        payload: { result: "tidied" },
      });
      expect(done.statusCode).toBe(200);
      expect(await t.reportedEvents()).toBe(603);
      expect(await t.usage()).toBe(await t.storedBytes());
    });
  },
);

describe("upgrading a database from before the caps", () => {
  it("has open tasks count the agents' events they already hold, and finished ones nothing", () => {
    const path = join(tempDir(), "swarm.db");
    const old = openDatabase({ path, migrations: loadMigrations().slice(0, 5) });
    const at = "2026-03-01T12:00:00.000Z";
    old
      .prepare(
        "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES ('a1', 'w', '[]', 1, 'busy', ?, ?)",
      )
      .run(at, at);
    const task = old.prepare(
      "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, assigned_agent, created_at) VALUES (?, 'job', ?, '[]', 1000, 'a1', ?)",
    );
    task.run("open", "running", at);
    task.run("done", "completed", at);
    const event = old.prepare(
      "INSERT INTO event_log (id, event_type, source, task_id, agent_id, data, timestamp) VALUES (?, ?, ?, ?, ?, '{}', ?)",
    );
    let n = 0;
    for (const taskId of ["open", "done"]) {
      event.run(`e${(n += 1)}`, "task.created", "coordinator", taskId, null, at);
      event.run(`e${(n += 1)}`, "bid.submitted", "a1", taskId, "a1", at);
      event.run(`e${(n += 1)}`, "task.assigned", "coordinator", taskId, "a1", at);
      event.run(`e${(n += 1)}`, "task.started", "a1", taskId, "a1", at);
      for (let i = 0; i < 3; i += 1) event.run(`e${(n += 1)}`, "tool.called", "a1", taskId, "a1", at);
    }
    old.close();

    const log = openTestLog({ path });
    const reported = log.db.prepare("SELECT id, reported_events FROM tasks ORDER BY id").all();
    expect(reported).toEqual([
      { id: "done", reported_events: 0 },
      { id: "open", reported_events: 5 },
    ]);
  });
});
