/**
 * The task lifecycle through the REST API, on both engines: award acknowledgement, execution
 * deadlines, retries with backoff (kept across a restart), direct assignment, re-runs and the
 * JSON status. The rules themselves are the core's (test/coordinator/decide.test.ts); these check
 * that every engine stores, reloads and answers them alike.
 */
import { describe, expect, it } from "vitest";
import { buildTestApp, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";
import { tempDir } from "../helpers/temp-dir.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

describe.each(ENGINES)("the task lifecycle on $name", ({ name: engine }) => {
  const build = (options: Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine"> = {}) =>
    buildTestApp<EngineName>({ ...options, engine });

  const call = async (
    t: TestApp<EngineName>,
    method: "GET" | "POST" | "DELETE",
    url: string,
    headers = t.operator,
    payload?: Record<string, unknown>,
  ) => {
    const response = await t.app.inject({
      method,
      url,
      headers,
      ...(payload === undefined ? {} : { payload }),
    });
    return { status: response.statusCode, body: response.json<Json>() };
  };
  const taskOf = async (t: TestApp<EngineName>, id: string) =>
    (await call(t, "GET", `/api/tasks/${id}`)).body.task as Json;
  const typesOf = async (t: TestApp<EngineName>, id: string) =>
    ((await call(t, "GET", `/api/tasks/${id}/events?limit=200`)).body.events as Json[]).map(
      (e) => e.event_type as string,
    );

  /** a bids 10 and b bids 20 on a new task with `body`; the auction closes to a when both are in. */
  async function awarded(t: TestApp<EngineName>, body: Record<string, unknown>) {
    const a = await t.agent("a");
    const b = await t.agent("b");
    const id = await t.task(body);
    expect((await t.bid(b, id, 20)).statusCode).toBe(201);
    expect((await t.bid(a, id, 10)).statusCode).toBe(201);
    expect(await taskOf(t, id)).toMatchObject({ status: "assigned", assigned_agent: a.id });
    return { a, b, id };
  }

  it("passes an award nobody started within ack_ms to the next bid, and says so in the history", async () => {
    const t = await build();
    const { a, b, id } = await awarded(t, { ack_ms: 1500 });
    expect(await taskOf(t, id)).toMatchObject({ ack_ms: 1500, due_at: "2026-03-01T12:00:01.500Z" });
    t.clock.advance(1500);
    await t.tick();
    expect(await taskOf(t, id)).toMatchObject({
      status: "assigned",
      assigned_agent: b.id,
      winning_bid_sats: 20,
      declined_agents: [a.id],
    });
    const late = await call(t, "POST", `/api/tasks/${id}/start`, a.auth);
    expect(late.status).toBe(403);
    expect(late.body.error.code).toBe("NOT_ASSIGNED_AGENT");
    expect((await call(t, "POST", `/api/tasks/${id}/start`, b.auth)).status).toBe(200);
    expect(await typesOf(t, id)).toEqual(
      expect.arrayContaining(["auction.closed", "task.assigned", "task.award_expired", "task.started"]),
    );
    const bids = (await call(t, "GET", `/api/tasks/${id}`)).body.bids as Json[];
    expect(Object.fromEntries(bids.map((bid) => [bid.agent_id as string, bid.outcome as string]))).toEqual({
      [a.id]: "lost",
      [b.id]: "won",
    });
  });

  it("times a run out, retries it after its backoff in a new round, and keeps each round's bids apart", async () => {
    const t = await build();
    const { a, b, id } = await awarded(t, { timeout_ms: 2000, max_attempts: 2, retry_backoff_ms: 1000 });
    expect((await call(t, "POST", `/api/tasks/${id}/start`, a.auth)).status).toBe(200);
    t.clock.advance(2000);
    for (const agent of [a, b]) await call(t, "POST", `/api/agents/${agent.id}/heartbeat`, agent.auth);
    await t.tick();
    expect(await taskOf(t, id)).toMatchObject({
      status: "waiting",
      failures: 1,
      failed_agents: [a.id],
      opens_at: "2026-03-01T12:00:03.000Z",
      assigned_agent: null,
    });
    const early = await t.bid(b, id, 5);
    expect(early.statusCode).toBe(409);
    t.clock.advance(1000);
    await t.tick();
    expect(await taskOf(t, id)).toMatchObject({ status: "bidding", attempt: 2 });
    // a failed the first attempt: b wins the second although a bids less.
    await t.bid(a, id, 1);
    await t.bid(b, id, 30);
    expect(await taskOf(t, id)).toMatchObject({
      status: "assigned",
      assigned_agent: b.id,
      winning_bid_sats: 30,
    });
    const rounds = ((await call(t, "GET", `/api/tasks/${id}`)).body.bids as Json[]).map(
      (bid) => `${bid.attempt as number}:${bid.bid_sats as number}:${bid.outcome as string}`,
    );
    expect(rounds.sort()).toEqual(["1:10:won", "1:20:lost", "2:1:lost", "2:30:won"]);
    expect(await typesOf(t, id)).toEqual(expect.arrayContaining(["task.timed_out", "task.retry_scheduled"]));
  });

  it("keeps a retry's backoff and an award's deadline across a restart, from the stored times", async () => {
    const dir = tempDir();
    const first = await build(engine === "sqlite" ? { path: `${dir}/swarm.db` } : {});
    const { a, b, id } = await awarded(first, { max_attempts: 2, retry_backoff_ms: 60_000 });
    const bOfFirst = () => b;
    expect((await call(first, "POST", `/api/tasks/${id}/start`, a.auth)).status).toBe(200);
    expect((await call(first, "POST", `/api/tasks/${id}/fail`, a.auth, { reason: "flaky" })).status).toBe(
      200,
    );
    const c = await first.agent("c");
    const other = await first.task({ ack_ms: 5000 });
    await first.bid(c, other, 3);
    await first.bid(bOfFirst(), other, 4);
    await first.bid(a, other, 5); // every agent has bid: the auction closes to c
    expect(await taskOf(first, other)).toMatchObject({ status: "assigned", assigned_agent: c.id });
    await first.app.close();
    await first.coordinator.stop();

    const second = await build(engine === "sqlite" ? { path: `${dir}/swarm.db` } : { url: first.url! });
    const beat = async (ms: number) => {
      second.clock.advance(ms);
      for (const agent of [a, b, c])
        await call(second, "POST", `/api/agents/${agent.id}/heartbeat`, agent.auth);
      await second.tick();
    };
    await beat(4999);
    expect(await taskOf(second, other)).toMatchObject({ status: "assigned", assigned_agent: c.id });
    await beat(1);
    expect(await taskOf(second, other)).toMatchObject({ status: "assigned", assigned_agent: b.id });
    await beat(54_999);
    expect(await taskOf(second, id)).toMatchObject({
      status: "waiting",
      opens_at: "2026-03-01T12:01:00.000Z",
    });
    await beat(1);
    expect(await taskOf(second, id)).toMatchObject({ status: "bidding", attempt: 2 });
  });

  it("assigns directly on post and by the operator during the auction, refusing an agent that cannot take it", async () => {
    const t = await build();
    const coder = await t.agent("coder", { capabilities: ["code"] });
    const writer = await t.agent("writer", { capabilities: ["writing"] });
    const posted = await call(t, "POST", "/api/tasks", t.operator, {
      description: "fix it",
      required_capabilities: ["code"],
      assign_to: coder.id,
    });
    expect(posted.status).toBe(201);
    expect(posted.body.task).toMatchObject({
      status: "assigned",
      assigned_agent: coder.id,
      winning_bid_sats: null,
    });
    const refused = await call(t, "POST", "/api/tasks", t.operator, {
      description: "fix it",
      required_capabilities: ["code"],
      assign_to: writer.id,
    });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({
      code: "AGENT_NOT_ELIGIBLE",
      details: { field: "assign_to", missing_capabilities: ["code"] },
    });
    const full = await call(t, "POST", "/api/tasks", t.operator, {
      description: "more",
      assign_to: coder.id,
    });
    expect(full.body.error.code).toBe("AGENT_AT_CAPACITY");

    await t.agent("bystander"); // keeps the auction open after the writer's bid
    const open = await t.task({ description: "write it" });
    await t.bid(writer, open, 40);
    const byAgent = await call(t, "POST", `/api/tasks/${open}/assign`, writer.auth, { agent_id: writer.id });
    expect(byAgent.status).toBe(403);
    const assigned = await call(t, "POST", `/api/tasks/${open}/assign`, t.operator, { agent_id: writer.id });
    expect(assigned.status).toBe(200);
    expect(assigned.body.task).toMatchObject({
      status: "assigned",
      assigned_agent: writer.id,
      winning_bid_sats: 40,
    });
    const again = await call(t, "POST", `/api/tasks/${open}/assign`, t.operator, { agent_id: writer.id });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("TASK_NOT_BIDDING");
    const unknown = await call(t, "POST", `/api/tasks/${await t.task()}/assign`, t.operator, {
      agent_id: "nobody",
    });
    expect(unknown.status).toBe(404);
  });

  it("re-runs a failed task once, linked both ways, and refuses what cannot be re-run", async () => {
    const t = await build();
    const id = await t.task({ description: "flaky job", timeout_ms: 9000, max_attempts: 2 });
    expect((await call(t, "POST", `/api/tasks/${id}/retry`)).body.error.code).toBe("TASK_NOT_RETRYABLE");
    await call(t, "POST", `/api/tasks/${id}/cancel`, t.operator, { reason: "wrong input" });
    const rerun = await call(t, "POST", `/api/tasks/${id}/retry`);
    expect(rerun.status).toBe(201);
    expect(rerun.body.task).toMatchObject({
      status: "bidding",
      description: "flaky job",
      timeout_ms: 9000,
      max_attempts: 2,
      retry_of: id,
    });
    expect(await taskOf(t, id)).toMatchObject({ status: "cancelled", retried_by: rerun.body.task.id });
    const twice = await call(t, "POST", `/api/tasks/${id}/retry`);
    expect(twice.status).toBe(409);
    expect(twice.body.error).toMatchObject({
      code: "TASK_ALREADY_RETRIED",
      details: { retry_task_id: rerun.body.task.id },
    });
    expect(await typesOf(t, id)).toContain("task.retried");
  });

  it("refuses a post on an unknown or a cancelled dependency, naming it, and opens at once on a completed one", async () => {
    const t = await build();
    const unknown = await call(t, "POST", "/api/tasks", t.operator, {
      description: "x",
      depends_on: ["ghost"],
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({
      code: "INVALID_COMMAND",
      details: { field: "depends_on[0]" },
    });
    const cancelled = await t.task();
    await call(t, "POST", `/api/tasks/${cancelled}/cancel`);
    const onCancelled = await call(t, "POST", "/api/tasks", t.operator, {
      description: "x",
      depends_on: [cancelled],
    });
    expect(onCancelled.status).toBe(409);
    expect(onCancelled.body.error).toMatchObject({
      code: "DEPENDENCY_FAILED",
      details: { dependency: cancelled },
    });
    const { a, id } = await awarded(t, {});
    await call(t, "POST", `/api/tasks/${id}/start`, a.auth);
    await call(t, "POST", `/api/tasks/${id}/complete`, a.auth, { result: "42" });
    const after = await call(t, "POST", "/api/tasks", t.operator, { description: "x", depends_on: [id] });
    expect(after.status).toBe(201);
    expect(after.body.task).toMatchObject({ status: "bidding", depends_on: [id], waiting_on: [] });
    const deps = await call(t, "GET", `/api/tasks/${after.body.task.id as string}/dependencies`);
    expect(deps.body.dependencies).toMatchObject([{ id, status: "completed", result: "42" }]);
  });

  it.each([
    [{ ack_ms: 0 }, "ack_ms"],
    [{ timeout_ms: 10 }, "timeout_ms"],
    [{ max_attempts: 101 }, "max_attempts"],
    [{ retry_backoff_ms: -5 }, "retry_backoff_ms"],
    [{ assign_to: "" }, "assign_to"],
    [{ ack_ms: "soon" }, "ack_ms"],
  ])("refuses a post with %j, naming %s, and writes nothing", async (input, field) => {
    const t = await build();
    const before = await t.eventLog.latestSeq();
    const response = await call(t, "POST", "/api/tasks", t.operator, { description: "x", ...input });
    expect(response.status).toBe(400);
    expect(JSON.stringify(response.body.error)).toContain(field);
    expect(await t.eventLog.latestSeq()).toBe(before);
  });

  it("answers the swarm's status as JSON", async () => {
    const t = await build();
    const a = await t.agent("a", { max_concurrent: 1 });
    await t.agent("b");
    const gone = await t.agent("c");
    await call(t, "DELETE", `/api/agents/${gone.id}`, gone.auth);
    const id = await t.task();
    await t.task();
    await t.bid(a, id, 5);
    await call(t, "POST", `/api/tasks/${id}/assign`, t.operator, { agent_id: a.id });
    const status = await call(t, "GET", "/api/status");
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({
      storage: engine,
      latest_seq: await t.eventLog.latestSeq(),
      agents: { idle: 1, busy: 1, offline: 0, online: 2, left: 1, total: 3 },
      tasks: { waiting: 0, bidding: 1, assigned: 1, running: 0, completed: 0, failed: 0, cancelled: 0 },
      open_auctions: 1,
    });
    expect(status.body.replica).toHaveProperty("id");
    expect((await call(t, "GET", "/api/status", {})).status).toBe(401);
  });
});
