import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { Coordinator, type CoordinatorOptions } from "../../src/coordinator/coordinator.js";
import type { CommandSubject } from "../../src/coordinator/port.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { fakeClock, openTestLog, silentLogger } from "../helpers/event-log.js";
import { tempDir } from "../helpers/temp-dir.js";

function setup(options: Partial<CoordinatorOptions> & { eventLog?: SqliteEventLog } = {}) {
  const clock = fakeClock("2026-03-01T12:00:00.000Z");
  const eventLog = options.eventLog ?? openTestLog({ clock: clock.now });
  const coordinator = new Coordinator({ eventLog, logger: silentLogger, clock: clock.now, ...options });
  return { clock, eventLog, coordinator };
}

/** Every row of the coordinator's tables and the event log, to compare before and after. */
function snapshot(eventLog: SqliteEventLog) {
  const all = (sql: string) => eventLog.db.prepare(sql).all();
  return {
    agents: all("SELECT * FROM agents ORDER BY id"),
    tasks: all("SELECT * FROM tasks ORDER BY id"),
    bids: all("SELECT * FROM bids ORDER BY task_id, agent_id"),
    events: all("SELECT seq, event_type FROM event_log ORDER BY seq"),
  };
}

describe("the coordinator on SQLite", () => {
  it("records a whole task lifecycle as events in seq order, with state to match", () => {
    const { coordinator, eventLog, clock } = setup({ rules: { closeWhenAllBid: false } });
    const alice = coordinator.execute({ type: "RegisterAgent", name: "alice", capabilities: ["code"] }).agent!
      .id;
    const bob = coordinator.execute({ type: "RegisterAgent", name: "bob", capabilities: ["code"] }).agent!.id;
    const task = coordinator.execute({
      type: "PostTask",
      description: "fix the bug",
      required_capabilities: ["code"],
    }).task!.id;
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: alice, bid_sats: 90 });
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: bob, bid_sats: 70 });
    clock.advance(coordinator.rules.defaultAuctionMs);
    coordinator.tick();
    coordinator.execute({ type: "StartTask", task_id: task, agent_id: bob });
    coordinator.execute({
      type: "RecordToolCall",
      task_id: task,
      agent_id: bob,
      tool: "grep",
      phase: "called",
      call_id: "c1",
    });
    coordinator.execute({
      type: "RecordToolCall",
      task_id: task,
      agent_id: bob,
      tool: "grep",
      phase: "completed",
      call_id: "c1",
    });
    const done = coordinator.execute({ type: "CompleteTask", task_id: task, agent_id: bob, result: "fixed" });

    const timeline = eventLog.getTaskEvents(task);
    expect(timeline.map((e) => e.event_type)).toEqual([
      "task.created",
      "task.bidding",
      "bid.submitted",
      "bid.submitted",
      "auction.closed",
      "task.assigned",
      "task.started",
      "tool.called",
      "tool.completed",
      "task.completed",
    ]);
    const seqs = timeline.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(done.events.map((e) => e.event_type)).toEqual(["task.completed", "agent.status_changed"]);
    expect(coordinator.getTask(task)).toMatchObject({
      status: "completed",
      assigned_agent: bob,
      winning_bid_sats: 70,
      result: "fixed",
    });
    expect(coordinator.getBids(task).map((b) => [b.agent_id, b.bid_sats, b.outcome])).toEqual([
      [alice, 90, "lost"],
      [bob, 70, "won"],
    ]);
    expect(coordinator.agentStats(bob)).toEqual({
      bids: 1,
      wins: 1,
      tasks_completed: 1,
      tasks_failed: 0,
      earned_sats: 70,
      win_rate: 1,
      average_winning_bid_sats: 70,
    });
    expect(coordinator.agentStats(alice)).toMatchObject({ bids: 1, wins: 0, win_rate: 0, earned_sats: 0 });
  });

  it("refuses with the core's code and writes nothing", () => {
    const { coordinator, eventLog } = setup();
    const before = snapshot(eventLog);
    expect(() =>
      coordinator.execute({ type: "SubmitBid", task_id: "nope", agent_id: "nobody", bid_sats: 1 }),
    ).toThrow(expect.objectContaining({ name: "SwarmError", code: "TASK_NOT_FOUND", status: 404 }));
    expect(snapshot(eventLog)).toEqual(before);
  });

  it("answers for a finished task from its table, not from memory", () => {
    const { coordinator } = setup();
    const agent = coordinator.execute({ type: "RegisterAgent", name: "solo" }).agent!.id;
    const task = coordinator.execute({ type: "PostTask", description: "one job" }).task!.id;
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    coordinator.execute({ type: "CompleteTask", task_id: task, agent_id: agent });
    expect(() => coordinator.execute({ type: "CancelTask", task_id: task })).toThrow(
      expect.objectContaining({ code: "TASK_FINAL" }),
    );
    expect(coordinator.getTask(task)?.status).toBe("completed");
  });

  it("keeps state, tables and event log untouched when a write fails half-way", () => {
    const { coordinator, eventLog } = setup({ rules: { closeWhenAllBid: false } });
    const agent = coordinator.execute({ type: "RegisterAgent", name: "a" }).agent!.id;
    const task = coordinator.execute({ type: "PostTask", description: "job" }).task!.id;
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    const before = snapshot(eventLog);
    const heard: string[] = [];
    eventLog.subscribe((event) => heard.push(event.event_type));
    // The close writes the task and the bid outcomes, then the disk "fails" before the events.
    const realApply = coordinator.store.apply.bind(coordinator.store);
    const spy = vi.spyOn(coordinator.store, "apply").mockImplementation((changes) => {
      realApply(changes);
      throw new Error("injected: disk failed after the state rows were written");
    });
    expect(() => coordinator.execute({ type: "CloseAuction", task_id: task })).toThrow(/injected/);
    spy.mockRestore();
    expect(snapshot(eventLog)).toEqual(before);
    expect(heard).toEqual([]);
    expect(coordinator.getTask(task)?.status).toBe("bidding");
    expect(coordinator.openBids(task)).toHaveLength(1);
    // And the same command goes through once the fault clears.
    coordinator.execute({ type: "CloseAuction", task_id: task });
    expect(coordinator.getTask(task)?.status).toBe("assigned");
    expect(heard).toEqual(["auction.closed", "task.assigned", "agent.status_changed"]);
  });

  it("surfaces a refused write as STORAGE_UNAVAILABLE and recovers when the database does", () => {
    const { coordinator, eventLog, clock } = setup();
    coordinator.execute({ type: "RegisterAgent", name: "a" });
    const due = coordinator.execute({ type: "PostTask", description: "due soon" }).task!.id;
    clock.advance(coordinator.rules.defaultAuctionMs);
    const before = snapshot(eventLog);
    eventLog.db.pragma("query_only = ON"); // the database turns read-only under us
    expect(() => coordinator.execute({ type: "PostTask", description: "job" })).toThrow(
      expect.objectContaining({ code: "STORAGE_UNAVAILABLE", status: 503 }),
    );
    expect(coordinator.tick()).toBeUndefined(); // the due close fails: logged, not thrown
    expect(snapshot(eventLog)).toEqual(before);
    expect(coordinator.getTask(due)?.status).toBe("bidding");
    eventLog.db.pragma("query_only = OFF");
    expect(coordinator.tick()?.events.map((e) => e.event_type)).toEqual(["auction.closed", "task.failed"]);
    expect(coordinator.execute({ type: "PostTask", description: "job" }).task?.status).toBe("bidding");
  });

  it("makes the Python-era race impossible: an early completion cannot be overwritten by the close", () => {
    const { coordinator, clock } = setup({ rules: { closeWhenAllBid: false } });
    const agent = coordinator.execute({ type: "RegisterAgent", name: "eager" }).agent!.id;
    const task = coordinator.execute({ type: "PostTask", description: "job" }).task!.id;
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    expect(() =>
      coordinator.execute({ type: "CompleteTask", task_id: task, agent_id: agent, result: "early" }),
    ).toThrow(expect.objectContaining({ code: "TASK_NOT_ACTIVE" }));
    clock.advance(coordinator.rules.defaultAuctionMs);
    coordinator.tick();
    expect(coordinator.getTask(task)).toMatchObject({ status: "assigned", result: null });
    coordinator.execute({ type: "CompleteTask", task_id: task, agent_id: agent, result: "on time" });
    coordinator.tick();
    expect(coordinator.getTask(task)).toMatchObject({ status: "completed", result: "on time" });
  });

  it("expires a silent agent and re-auctions its running task to another", () => {
    const { coordinator, clock, eventLog } = setup({ rules: { heartbeatTimeoutMs: 10_000 } });
    const quiet = coordinator.execute({ type: "RegisterAgent", name: "quiet" }).agent!.id;
    const task = coordinator.execute({ type: "PostTask", description: "job" }).task!.id;
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: quiet, bid_sats: 5 });
    coordinator.execute({ type: "StartTask", task_id: task, agent_id: quiet });
    clock.advance(10_000);
    const healthy = coordinator.execute({ type: "RegisterAgent", name: "healthy" }).agent!.id;
    coordinator.tick();
    expect(coordinator.getAgent(quiet)?.status).toBe("offline");
    expect(coordinator.getTask(task)).toMatchObject({ status: "bidding", attempt: 2 });
    coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: healthy, bid_sats: 8 });
    expect(coordinator.getTask(task)).toMatchObject({ status: "assigned", assigned_agent: healthy });
    expect(eventLog.getAgentEvents(quiet).map((e) => e.event_type)).toContain("agent.status_changed");
  });

  it("closes auctions on its own timer", async () => {
    const eventLog = openTestLog();
    const coordinator = new Coordinator({
      eventLog,
      logger: silentLogger,
      tickIntervalMs: 10,
      rules: { closeWhenAllBid: false },
    });
    coordinator.start();
    try {
      const agent = coordinator.execute({ type: "RegisterAgent", name: "a" }).agent!.id;
      const task = coordinator.execute({ type: "PostTask", description: "quick", auction_ms: 150 }).task!.id;
      coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 3 });
      const deadline = Date.now() + 5000;
      while (coordinator.getTask(task)?.status === "bidding" && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      expect(coordinator.getTask(task)).toMatchObject({ status: "assigned", assigned_agent: agent });
    } finally {
      coordinator.stop();
    }
  });
});

describe("recovery from the tables", () => {
  it("closes auctions that came due while it was down, among the recorded bids, and keeps running tasks", () => {
    const path = join(tempDir(), "swarm.db");
    const clock = fakeClock("2026-03-01T12:00:00.000Z");
    const first = openTestLog({ path, clock: clock.now });
    const before = new Coordinator({
      eventLog: first,
      logger: silentLogger,
      clock: clock.now,
      rules: { closeWhenAllBid: false },
    });
    const a = before.execute({ type: "RegisterAgent", name: "a" }).agent!.id;
    const b = before.execute({ type: "RegisterAgent", name: "b" }).agent!.id;
    const running = before.execute({ type: "PostTask", description: "long job" }).task!.id;
    before.execute({ type: "SubmitBid", task_id: running, agent_id: a, bid_sats: 5 });
    before.execute({ type: "CloseAuction", task_id: running });
    before.execute({ type: "StartTask", task_id: running, agent_id: a });
    const open = before.execute({ type: "PostTask", description: "open auction" }).task!.id;
    before.execute({ type: "SubmitBid", task_id: open, agent_id: b, bid_sats: 30 });
    first.close(); // the process stops

    clock.advance(60_000); // and is down past the auction's deadline
    const second = openTestLog({ path, clock: clock.now });
    const after = new Coordinator({ eventLog: second, logger: silentLogger, clock: clock.now });
    after.start();
    after.stop();
    expect(after.getTask(open)).toMatchObject({
      status: "assigned",
      assigned_agent: b,
      winning_bid_sats: 30,
    });
    expect(after.getTask(running)).toMatchObject({ status: "running", assigned_agent: a });
    expect(after.getAgent(a)).toMatchObject({ status: "offline" });
    expect(second.getTaskEvents(open).map((e) => e.event_type)).toContain("auction.closed");
    // a comes back and finishes; nothing was lost.
    after.execute({ type: "Heartbeat", agent_id: a });
    after.execute({ type: "CompleteTask", task_id: running, agent_id: a, result: "done" });
    expect(after.getTask(running)?.status).toBe("completed");
  });
});

describe("hand-backs on SQLite", () => {
  it("writes the hand-back and the new round together, and a restart still knows the round was not counted", () => {
    const path = join(tempDir(), "swarm.db");
    const clock = fakeClock("2026-03-01T12:00:00.000Z");
    const first = openTestLog({ path, clock: clock.now });
    const before = new Coordinator({ eventLog: first, logger: silentLogger, clock: clock.now });
    const agent = before.execute({ type: "RegisterAgent", name: "stopping" }).agent!.id;
    const task = before.execute({ type: "PostTask", description: "long job" }).task!.id;
    before.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    before.execute({ type: "StartTask", task_id: task, agent_id: agent });
    const released = before.execute({
      type: "ReleaseTask",
      task_id: task,
      agent_id: agent,
      reason: "stopping",
    });
    expect(released.events.map((e) => e.event_type)).toEqual([
      "task.released",
      "task.bidding",
      "agent.status_changed",
    ]);
    expect(first.db.prepare("SELECT status, attempt, releases FROM tasks WHERE id = ?").get(task)).toEqual({
      status: "bidding",
      attempt: 2,
      releases: 1,
    });
    first.close();

    const second = openTestLog({ path, clock: clock.now });
    const after = new Coordinator({ eventLog: second, logger: silentLogger, clock: clock.now });
    expect(after.getTask(task)).toMatchObject({ status: "bidding", attempt: 2, releases: 1 });
  });
});

describe("group-committed commands", () => {
  it("commits commands submitted together in one transaction, each seeing the ones before it", async () => {
    const { coordinator, eventLog } = setup({ rules: { closeWhenAllBid: false } });
    const agents = ["a", "b", "c"].map(
      (name) => coordinator.execute({ type: "RegisterAgent", name }).agent!.id,
    );
    const task = coordinator.execute({ type: "PostTask", description: "job" }).task!.id;
    const before = eventLog.writeStats().transactions;
    const results = await Promise.allSettled([
      coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agents[0]!, bid_sats: 30 }),
      coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agents[1]!, bid_sats: 20 }),
      coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: "ghost", bid_sats: 10 }),
      coordinator.submit({ type: "CloseAuction", task_id: task }),
      coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agents[2]!, bid_sats: 5 }),
    ]);
    expect(
      results.map((r) => (r.status === "fulfilled" ? "ok" : (r.reason as { code: string }).code)),
    ).toEqual(["ok", "ok", "AGENT_NOT_FOUND", "ok", "TASK_NOT_BIDDING"]);
    expect(eventLog.writeStats().transactions - before).toBe(1);
    expect(coordinator.getTask(task)).toMatchObject({
      status: "assigned",
      assigned_agent: agents[1],
      winning_bid_sats: 20,
    });
  });

  it("rejects only the command whose extra write fails", async () => {
    const { coordinator, eventLog } = setup();
    // Two of the three claim one token hash: the second to write it is refused, with its agent.
    const token = (hash: string) => (subject: CommandSubject) => [
      {
        kind: "save_token" as const,
        token_hash: hash,
        agent_id: subject.agent!.id,
        created_at: subject.agent!.registered_at,
      },
    ];
    const results = await Promise.allSettled([
      coordinator.submit({ type: "RegisterAgent", name: "first" }, token("same")),
      coordinator.submit({ type: "RegisterAgent", name: "second" }, token("same")),
      coordinator.submit({ type: "RegisterAgent", name: "third" }, token("other")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(
      coordinator
        .listAgents()
        .map((a) => a.name)
        .sort(),
    ).toEqual(["first", "third"]);
    expect(eventLog.listEvents().events.map((e) => e.data.name)).toEqual(["first", "third"]);
  });

  it("rejects the whole batch and reloads memory from the tables when the commit fails", async () => {
    const { coordinator, eventLog } = setup();
    coordinator.execute({ type: "RegisterAgent", name: "kept" });
    const realTransaction = eventLog.transaction.bind(eventLog);
    // The batch's transaction runs every command, then fails at the end and rolls back.
    const spy = vi.spyOn(eventLog, "transaction").mockImplementationOnce((body) =>
      realTransaction((tx) => {
        body(tx);
        throw new Error("injected: the commit failed");
      }),
    );
    const results = await Promise.allSettled([
      coordinator.submit({ type: "RegisterAgent", name: "lost-1" }),
      coordinator.submit({ type: "RegisterAgent", name: "lost-2" }),
    ]);
    spy.mockRestore();
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(results[0]).toMatchObject({ reason: { message: "injected: the commit failed" } });
    expect(eventLog.db.prepare("SELECT name FROM agents").pluck().all()).toEqual(["kept"]);
    expect(coordinator.listAgents().map((a) => a.name)).toEqual(["kept"]);
    await expect(coordinator.submit({ type: "RegisterAgent", name: "after" })).resolves.toMatchObject({
      agent: { name: "after" },
    });
  });
});
