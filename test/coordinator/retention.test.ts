import { describe, expect, it } from "vitest";
import { buildTestApp, type EngineName } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

const DAY = 86_400_000;
const HOUR = 3_600_000;
const RETENTION = { taskRetentionDays: 30, idempotencyKeyHours: 24 };

/** A coordinator behind the API on `engine`, with helpers that drive it through whole task lives at the fake clock's time. */
async function setup(engine: EngineName) {
  const t = await buildTestApp<EngineName>({ engine, rules: { closeWhenAllBid: false } });
  const { coordinator, clock } = t;
  const register = async (name: string, capabilities: string[] = ["work"]) =>
    (await coordinator.submit({ type: "RegisterAgent", name, capabilities, max_concurrent: 10 })).agent!.id;
  const post = async (capability = "work") =>
    (
      await coordinator.submit({
        type: "PostTask",
        description: "a job",
        required_capabilities: [capability],
      })
    ).task!.id;
  /** Bids from each agent in order (lowest first wins), then the auction closes. */
  const auction = async (task: string, ...bidders: string[]) => {
    for (const [index, agent] of bidders.entries())
      await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 10 + index });
    clock.advance(coordinator.rules.defaultAuctionMs);
    await t.tick();
  };
  const count = async (table: string) => (await t.sql(`SELECT COUNT(*) AS n FROM ${table}`))[0]?.n;
  /** One column of every row the statement reads, sorted. */
  const column = async (statement: string) =>
    (await t.sql(statement)).map((row) => Object.values(row)[0]).sort();
  return { ...t, register, post, auction, count, column };
}

describe.each(ENGINES)("retention of finished work on $name", ({ name: engine }) => {
  it("prunes tasks that ended before the retention with their bids and keys, keeping younger and active ones", async () => {
    const t = await setup(engine);
    const worker = await t.register("worker");
    const rival = await t.register("rival");
    // Ended at the start, 40 days before the prune: completed (with bids and an Idempotency-Key),
    // cancelled, and failed by the operator.
    const posted = await t.app.inject({
      method: "POST",
      url: "/api/tasks",
      headers: { ...t.operator, "idempotency-key": "old-post" },
      payload: { description: "a job", required_capabilities: ["work"] },
    });
    const completed = posted.json<Json>().task.id as string;
    await t.auction(completed, worker, rival);
    await t.coordinator.submit({ type: "StartTask", task_id: completed, agent_id: worker });
    await t.coordinator.submit({
      type: "CompleteTask",
      task_id: completed,
      agent_id: worker,
      result: "done",
    });
    const cancelled = await t.post();
    await t.coordinator.submit({ type: "CancelTask", task_id: cancelled });
    const failed = await t.post();
    await t.auction(failed, worker);
    await t.coordinator.submit({ type: "FailTask", task_id: failed });
    // Ended 20 days before the prune: inside the retention.
    const recent = await t.post();
    await t.auction(recent, worker, rival);
    // Still at work, though posted as long ago: running, and in an open auction (no tick after).
    const running = await t.post();
    await t.auction(running, worker);
    await t.coordinator.submit({ type: "StartTask", task_id: running, agent_id: worker });
    const bidding = await t.post();
    await t.coordinator.submit({ type: "SubmitBid", task_id: bidding, agent_id: rival, bid_sats: 7 });
    t.clock.advance(20 * DAY);
    await t.coordinator.submit({ type: "StartTask", task_id: recent, agent_id: worker });
    await t.coordinator.submit({ type: "CompleteTask", task_id: recent, agent_id: worker });
    t.clock.advance(20 * DAY);

    const report = await t.coordinator.pruneFinished(RETENTION);

    expect(report).toMatchObject({
      task_cutoff: new Date(t.clock.now().getTime() - 30 * DAY).toISOString(),
      tasks_deleted: 3,
      bids_deleted: 3,
      idempotency_keys_deleted: 1,
      agents_deleted: 0,
    });
    expect(await t.column("SELECT id FROM tasks")).toEqual([running, bidding, recent].sort());
    expect(await t.column("SELECT DISTINCT task_id FROM bids")).toEqual([running, bidding, recent].sort());
    expect(await t.count("idempotency_keys")).toBe(0);
    // The working set is as it was: the running task takes its agent's reports, the auction its bids.
    expect(await t.coordinator.getTask(running)).toMatchObject({ status: "running", assigned_agent: worker });
    expect((await t.coordinator.openBids(bidding)).map((bid) => bid.agent_id)).toEqual([rival]);
    await t.coordinator.submit({
      type: "RecordToolCall",
      task_id: running,
      agent_id: worker,
      tool: "grep",
      phase: "called",
    });
    // A second run finds nothing more to do.
    expect(await t.coordinator.pruneFinished(RETENTION)).toMatchObject({ tasks_deleted: 0, bids_deleted: 0 });
  });

  it("answers reads of a pruned task 404, exactly as for a task that never was", async () => {
    const t = await setup(engine);
    const task = await t.post();
    await t.coordinator.submit({ type: "CancelTask", task_id: task });
    t.clock.advance(31 * DAY);
    await t.coordinator.pruneFinished(RETENTION);

    for (const path of ["", "/events"]) {
      const pruned = await t.app.inject({
        method: "GET",
        url: `/api/tasks/${task}${path}`,
        headers: t.operator,
      });
      const unknown = await t.app.inject({
        method: "GET",
        url: `/api/tasks/never-was${path}`,
        headers: t.operator,
      });
      expect(pruned.statusCode, path).toBe(404);
      expect(pruned.json<Json>().error.code, path).toBe("TASK_NOT_FOUND");
      expect(pruned.json<Json>().error.code).toBe(unknown.json<Json>().error.code);
    }
    // Its events are pruned by their own retention, not with the task.
    expect((await t.eventLog.listEvents({ task_id: task })).events.length).toBeGreaterThan(0);
    const cancel = await t.app.inject({
      method: "POST",
      url: `/api/tasks/${task}/cancel`,
      headers: t.operator,
    });
    expect(cancel.statusCode).toBe(404);
  });

  it("prunes agents that left before the retention once no kept task or bid names them, in the tables and in memory", async () => {
    const t = await setup(engine);
    const worker = await t.register("worker");
    const quitter = await t.register("quitter");
    const loser = await t.register("loser");
    const bidder = await t.register("bidder", ["rare"]);
    // The loser bid on a task the worker will only finish 20 days on; the bidder bid in an
    // auction still open. Both leave at the start, as does the quitter, who did nothing.
    const long = await t.post();
    await t.auction(long, worker, loser);
    const open = await t.post("rare");
    await t.coordinator.submit({ type: "SubmitBid", task_id: open, agent_id: bidder, bid_sats: 5 });
    for (const agent of [quitter, loser, bidder]) {
      const left = await t.app.inject({ method: "DELETE", url: `/api/agents/${agent}`, headers: t.operator });
      expect(left.statusCode).toBe(200);
    }
    t.clock.advance(20 * DAY);
    await t.coordinator.submit({ type: "StartTask", task_id: long, agent_id: worker });
    await t.coordinator.submit({ type: "CompleteTask", task_id: long, agent_id: worker });
    t.clock.advance(20 * DAY);

    expect(await t.coordinator.pruneFinished(RETENTION)).toMatchObject({ agents_deleted: 1 });
    const names = async () => (await t.coordinator.listAgents()).map((agent) => agent.name).sort();
    expect(await names()).toEqual(["bidder", "loser", "worker"]);
    expect(await t.coordinator.getAgent(quitter)).toBeUndefined();
    const read = await t.app.inject({ method: "GET", url: `/api/agents/${quitter}`, headers: t.operator });
    expect(read.statusCode).toBe(404);
    expect(read.json<Json>().error.code).toBe("AGENT_NOT_FOUND");
    // The kept task still shows its losing bid, and who placed it.
    const kept = await t.app.inject({ method: "GET", url: `/api/tasks/${long}`, headers: t.operator });
    expect(kept.json<Json>().bids.map((bid: Json) => bid.agent_id)).toContain(loser);

    // Once the task it bid on is pruned, the loser goes too; the bidder's auction is still open.
    t.clock.advance(11 * DAY);
    expect(await t.coordinator.pruneFinished(RETENTION)).toMatchObject({
      tasks_deleted: 1,
      agents_deleted: 1,
    });
    expect(await names()).toEqual(["bidder", "worker"]);
    expect(await t.count("agents")).toBe(2);
    // An agent that never left stays, however long it has been quiet.
    expect(await t.coordinator.getAgent(worker)).toMatchObject({ left_at: null });
  });

  it("forgets Idempotency-Keys after their own hours: a retry within them answers the task, one after posts anew", async () => {
    const t = await setup(engine);
    const post = () =>
      t.app.inject({
        method: "POST",
        url: "/api/tasks",
        headers: { ...t.operator, "idempotency-key": "nightly-report" },
        payload: { description: "a job" },
      });
    const first = await post();
    expect(first.statusCode).toBe(201);
    t.clock.advance(23 * HOUR);
    expect(await t.coordinator.pruneFinished(RETENTION)).toMatchObject({ idempotency_keys_deleted: 0 });
    const retry = await post();
    expect(retry.statusCode).toBe(200);
    expect(retry.json<Json>().task.id).toBe(first.json<Json>().task.id);

    t.clock.advance(2 * HOUR);
    expect(await t.coordinator.pruneFinished(RETENTION)).toMatchObject({ idempotency_keys_deleted: 1 });
    const later = await post();
    expect(later.statusCode).toBe(201);
    expect(later.json<Json>().task.id).not.toBe(first.json<Json>().task.id);
    // The task itself, still in its auction, is untouched.
    expect(await t.coordinator.getTask(first.json<Json>().task.id as string)).toMatchObject({
      status: "bidding",
    });
  });

  it("deletes in several chunks and lets other work run between them", async () => {
    const t = await setup(engine);
    // Submitted together, so that they commit in a few group-committed batches, not 3000 transactions.
    const tasks = await Promise.all(Array.from({ length: 1500 }, () => t.post()));
    await Promise.all(tasks.map((task) => t.coordinator.submit({ type: "CancelTask", task_id: task })));
    t.clock.advance(31 * DAY);
    let turns = 0;
    const ticker = setInterval(() => (turns += 1), 0);
    const report = await t.coordinator.pruneFinished({ ...RETENTION, targetChunkMs: 1 });
    clearInterval(ticker);
    expect(report.tasks_deleted).toBe(1500);
    expect(report.chunks).toBeGreaterThan(3);
    expect(turns).toBeGreaterThan(0);
    expect(await t.count("tasks")).toBe(0);
  });

  it.each([
    [{ taskRetentionDays: 0.5, idempotencyKeyHours: 24 }, "taskRetentionDays"],
    [{ taskRetentionDays: 30, idempotencyKeyHours: 0 }, "idempotencyKeyHours"],
  ])("refuses a retention below its minimum (%j), deleting nothing", async (retention, field) => {
    const t = await setup(engine);
    const task = await t.post();
    await t.coordinator.submit({ type: "CancelTask", task_id: task });
    t.clock.advance(31 * DAY);
    await expect(t.coordinator.pruneFinished(retention)).rejects.toMatchObject({
      code: "RETENTION_TOO_SHORT",
      details: { field },
    });
    expect(await t.count("tasks")).toBe(1);
  });
});
