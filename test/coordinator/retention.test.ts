import { describe, expect, it } from "vitest";
import { buildTestApp } from "../helpers/app.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

const DAY = 86_400_000;
const HOUR = 3_600_000;
const RETENTION = { taskRetentionDays: 30, idempotencyKeyHours: 24 };

/** A coordinator behind the API, with helpers that drive it through whole task lives at the fake clock's time. */
async function setup() {
  const t = await buildTestApp({ rules: { closeWhenAllBid: false } });
  const { coordinator, clock } = t;
  const register = (name: string, capabilities: string[] = ["work"]) =>
    coordinator.execute({ type: "RegisterAgent", name, capabilities, max_concurrent: 10 }).agent!.id;
  const post = (capability = "work") =>
    coordinator.execute({ type: "PostTask", description: "a job", required_capabilities: [capability] }).task!
      .id;
  /** Bids from each agent in order (lowest first wins), then the auction closes. */
  const auction = (task: string, ...bidders: string[]) => {
    bidders.forEach((agent, index) =>
      coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 10 + index }),
    );
    clock.advance(coordinator.rules.defaultAuctionMs);
    coordinator.tick();
  };
  const count = (table: string) =>
    t.eventLog.db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number;
  return { ...t, register, post, auction, count };
}

describe("retention of finished work", () => {
  it("prunes tasks that ended before the retention with their bids and keys, keeping younger and active ones", async () => {
    const t = await setup();
    const worker = t.register("worker");
    const rival = t.register("rival");
    // Ended at the start, 40 days before the prune: completed (with bids and an Idempotency-Key),
    // cancelled, and failed by the operator.
    const posted = await t.app.inject({
      method: "POST",
      url: "/api/tasks",
      headers: { ...t.operator, "idempotency-key": "old-post" },
      payload: { description: "a job", required_capabilities: ["work"] },
    });
    const completed = posted.json<Json>().task.id as string;
    t.auction(completed, worker, rival);
    t.coordinator.execute({ type: "StartTask", task_id: completed, agent_id: worker });
    t.coordinator.execute({ type: "CompleteTask", task_id: completed, agent_id: worker, result: "done" });
    const cancelled = t.post();
    t.coordinator.execute({ type: "CancelTask", task_id: cancelled });
    const failed = t.post();
    t.auction(failed, worker);
    t.coordinator.execute({ type: "FailTask", task_id: failed });
    // Ended 20 days before the prune: inside the retention.
    const recent = t.post();
    t.auction(recent, worker, rival);
    // Still at work, though posted as long ago: running, and in an open auction (no tick after).
    const running = t.post();
    t.auction(running, worker);
    t.coordinator.execute({ type: "StartTask", task_id: running, agent_id: worker });
    const bidding = t.post();
    t.coordinator.execute({ type: "SubmitBid", task_id: bidding, agent_id: rival, bid_sats: 7 });
    t.clock.advance(20 * DAY);
    t.coordinator.execute({ type: "StartTask", task_id: recent, agent_id: worker });
    t.coordinator.execute({ type: "CompleteTask", task_id: recent, agent_id: worker });
    t.clock.advance(20 * DAY);

    const report = await t.coordinator.pruneFinished(RETENTION);

    expect(report).toMatchObject({
      task_cutoff: new Date(t.clock.now().getTime() - 30 * DAY).toISOString(),
      tasks_deleted: 3,
      bids_deleted: 3,
      idempotency_keys_deleted: 1,
      agents_deleted: 0,
    });
    const kept = t.eventLog.db.prepare("SELECT id FROM tasks").pluck().all();
    expect(kept.sort()).toEqual([running, bidding, recent].sort());
    expect(t.eventLog.db.prepare("SELECT DISTINCT task_id FROM bids").pluck().all().sort()).toEqual(
      [running, bidding, recent].sort(),
    );
    expect(t.count("idempotency_keys")).toBe(0);
    // The working set is as it was: the running task takes its agent's reports, the auction its bids.
    expect(t.coordinator.getTask(running)).toMatchObject({ status: "running", assigned_agent: worker });
    expect(t.coordinator.openBids(bidding).map((bid) => bid.agent_id)).toEqual([rival]);
    t.coordinator.execute({
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
    const t = await setup();
    const task = t.post();
    t.coordinator.execute({ type: "CancelTask", task_id: task });
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
    expect(t.eventLog.listEvents({ task_id: task }).events.length).toBeGreaterThan(0);
    const cancel = await t.app.inject({
      method: "POST",
      url: `/api/tasks/${task}/cancel`,
      headers: t.operator,
    });
    expect(cancel.statusCode).toBe(404);
  });

  it("prunes agents that left before the retention once no kept task or bid names them, in the tables and in memory", async () => {
    const t = await setup();
    const worker = t.register("worker");
    const quitter = t.register("quitter");
    const loser = t.register("loser");
    const bidder = t.register("bidder", ["rare"]);
    // The loser bid on a task the worker will only finish 20 days on; the bidder bid in an
    // auction still open. Both leave at the start, as does the quitter, who did nothing.
    const long = t.post();
    t.auction(long, worker, loser);
    const open = t.post("rare");
    t.coordinator.execute({ type: "SubmitBid", task_id: open, agent_id: bidder, bid_sats: 5 });
    for (const agent of [quitter, loser, bidder]) {
      const left = await t.app.inject({ method: "DELETE", url: `/api/agents/${agent}`, headers: t.operator });
      expect(left.statusCode).toBe(200);
    }
    t.clock.advance(20 * DAY);
    t.coordinator.execute({ type: "StartTask", task_id: long, agent_id: worker });
    t.coordinator.execute({ type: "CompleteTask", task_id: long, agent_id: worker });
    t.clock.advance(20 * DAY);

    expect(await t.coordinator.pruneFinished(RETENTION)).toMatchObject({ agents_deleted: 1 });
    const names = () =>
      t.coordinator
        .listAgents()
        .map((agent) => agent.name)
        .sort();
    expect(names()).toEqual(["bidder", "loser", "worker"]);
    expect(t.coordinator.getAgent(quitter)).toBeUndefined();
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
    expect(names()).toEqual(["bidder", "worker"]);
    expect(t.count("agents")).toBe(2);
    // An agent that never left stays, however long it has been quiet.
    expect(t.coordinator.getAgent(worker)).toMatchObject({ left_at: null });
  });

  it("forgets Idempotency-Keys after their own hours: a retry within them answers the task, one after posts anew", async () => {
    const t = await setup();
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
    expect(t.coordinator.getTask(first.json<Json>().task.id as string)).toMatchObject({ status: "bidding" });
  });

  it("deletes in several chunks and lets other work run between them", async () => {
    const t = await setup();
    for (let i = 0; i < 1500; i += 1) {
      const task = t.post();
      t.coordinator.execute({ type: "CancelTask", task_id: task });
    }
    t.clock.advance(31 * DAY);
    let turns = 0;
    const ticker = setInterval(() => (turns += 1), 0);
    const report = await t.coordinator.pruneFinished({ ...RETENTION, targetChunkMs: 1 });
    clearInterval(ticker);
    expect(report.tasks_deleted).toBe(1500);
    expect(report.chunks).toBeGreaterThan(3);
    expect(turns).toBeGreaterThan(0);
    expect(t.count("tasks")).toBe(0);
  });

  it.each([
    [{ taskRetentionDays: 0.5, idempotencyKeyHours: 24 }, "taskRetentionDays"],
    [{ taskRetentionDays: 30, idempotencyKeyHours: 0 }, "idempotencyKeyHours"],
  ])("refuses a retention below its minimum (%j), deleting nothing", async (retention, field) => {
    const t = await setup();
    const task = t.post();
    t.coordinator.execute({ type: "CancelTask", task_id: task });
    t.clock.advance(31 * DAY);
    await expect(t.coordinator.pruneFinished(retention)).rejects.toMatchObject({
      code: "RETENTION_TOO_SHORT",
      details: { field },
    });
    expect(t.count("tasks")).toBe(1);
  });
});
