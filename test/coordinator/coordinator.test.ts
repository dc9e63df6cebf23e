import pg from "pg";
import { describe, expect, it, vi } from "vitest";
import type { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CommandSubject } from "../../src/coordinator/port.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { coordinatorOn, type TestCoordinator } from "../helpers/coordinator.js";
import { ENGINES } from "../helpers/engines.js";
import { POSTGRES_URL } from "../helpers/postgres.js";

/** Every row of the coordinator's tables and the event log, to compare before and after. */
async function snapshot(t: TestCoordinator) {
  return {
    agents: await t.sql("SELECT * FROM agents ORDER BY id"),
    tasks: await t.sql("SELECT * FROM tasks ORDER BY id"),
    bids: await t.sql("SELECT * FROM bids ORDER BY task_id, agent_id"),
    events: await t.sql("SELECT seq, event_type FROM event_log ORDER BY seq"),
  };
}

/**
 * PostgreSQL: a statement the coordinator runs fails with `message` until the returned function
 * takes the fault away. A trigger of the database's own raises it, so the failure comes back
 * through the driver as any other would: on inserting into `table`, or (`atCommit`) at COMMIT, as
 * a deferred constraint does.
 */
async function postgresFault(
  t: TestCoordinator,
  table: string,
  message: string,
  { atCommit = false } = {},
): Promise<() => Promise<void>> {
  await t.sql(
    `CREATE FUNCTION swarm_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '${message}'; END $$`,
  );
  await t.sql(
    atCommit
      ? `CREATE CONSTRAINT TRIGGER swarm_test_fault AFTER INSERT ON ${table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION swarm_test_fault()`
      : `CREATE TRIGGER swarm_test_fault BEFORE INSERT ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION swarm_test_fault()`,
  );
  return async () => {
    await t.sql(`DROP TRIGGER swarm_test_fault ON ${table}`);
    await t.sql("DROP FUNCTION swarm_test_fault()");
  };
}

/**
 * PostgreSQL: the database turns read-only (as a primary demoted to a standby does), or
 * writable again. A session reads the setting when it starts, so the coordinator's connections
 * are ended and the pool opens new ones; this waits until every old one is gone.
 */
async function setPostgresReadOnly(t: TestCoordinator, readOnly: boolean): Promise<void> {
  const database = new URL(t.where).pathname.slice(1);
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  try {
    await admin.query(
      `ALTER DATABASE ${database} ${readOnly ? "SET default_transaction_read_only = on" : "RESET default_transaction_read_only"}`,
    );
    const { rows } = await admin.query<{ at: Date }>("SELECT clock_timestamp() AS at");
    const changedAt = rows[0]!.at;
    const stale = async () =>
      (
        await admin.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_start <= $2",
          [database, changedAt],
        )
      ).rows[0]!.n;
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND backend_start <= $2",
      [database, changedAt],
    );
    while ((await stale()) > 0) await new Promise((resolve) => setTimeout(resolve, 10));
  } finally {
    await admin.end();
  }
}

describe.each(ENGINES)("the coordinator on $name", ({ name: engine }) => {
  const setup = (options: Parameters<typeof coordinatorOn>[1] = {}) => coordinatorOn(engine, options);

  it("records a whole task lifecycle as events in seq order, with state to match", async () => {
    const { coordinator, eventLog, clock, tick } = await setup({ rules: { closeWhenAllBid: false } });
    const alice = (await coordinator.submit({ type: "RegisterAgent", name: "alice", capabilities: ["code"] }))
      .agent!.id;
    const bob = (await coordinator.submit({ type: "RegisterAgent", name: "bob", capabilities: ["code"] }))
      .agent!.id;
    const task = (
      await coordinator.submit({
        type: "PostTask",
        description: "fix the bug",
        required_capabilities: ["code"],
      })
    ).task!.id;
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: alice, bid_sats: 90 });
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: bob, bid_sats: 70 });
    clock.advance(coordinator.rules.defaultAuctionMs);
    await tick();
    await coordinator.submit({ type: "StartTask", task_id: task, agent_id: bob });
    await coordinator.submit({
      type: "RecordToolCall",
      task_id: task,
      agent_id: bob,
      tool: "grep",
      phase: "called",
      call_id: "c1",
    });
    await coordinator.submit({
      type: "RecordToolCall",
      task_id: task,
      agent_id: bob,
      tool: "grep",
      phase: "completed",
      call_id: "c1",
    });
    const done = await coordinator.submit({
      type: "CompleteTask",
      task_id: task,
      agent_id: bob,
      result: "fixed",
    });

    const timeline = await eventLog.getTaskEvents(task);
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
    expect(await coordinator.getTask(task)).toMatchObject({
      status: "completed",
      assigned_agent: bob,
      winning_bid_sats: 70,
      result: "fixed",
    });
    expect((await coordinator.getBids(task)).map((b) => [b.agent_id, b.bid_sats, b.outcome])).toEqual([
      [alice, 90, "lost"],
      [bob, 70, "won"],
    ]);
    expect(await coordinator.agentStats(bob)).toEqual({
      bids: 1,
      wins: 1,
      tasks_completed: 1,
      tasks_failed: 0,
      earned_sats: 70,
      win_rate: 1,
      average_winning_bid_sats: 70,
    });
    expect(await coordinator.agentStats(alice)).toMatchObject({
      bids: 1,
      wins: 0,
      win_rate: 0,
      earned_sats: 0,
    });
  });

  it("refuses with the core's code and writes nothing", async () => {
    const t = await setup();
    const before = await snapshot(t);
    await expect(
      t.coordinator.submit({ type: "SubmitBid", task_id: "nope", agent_id: "nobody", bid_sats: 1 }),
    ).rejects.toThrow(expect.objectContaining({ name: "SwarmError", code: "TASK_NOT_FOUND", status: 404 }));
    expect(await snapshot(t)).toEqual(before);
  });

  it("answers for a finished task from its table, not from memory", async () => {
    const { coordinator } = await setup();
    const agent = (await coordinator.submit({ type: "RegisterAgent", name: "solo" })).agent!.id;
    const task = (await coordinator.submit({ type: "PostTask", description: "one job" })).task!.id;
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    await coordinator.submit({ type: "CompleteTask", task_id: task, agent_id: agent });
    await expect(coordinator.submit({ type: "CancelTask", task_id: task })).rejects.toThrow(
      expect.objectContaining({ code: "TASK_FINAL" }),
    );
    expect((await coordinator.getTask(task))?.status).toBe("completed");
  });

  it("keeps state, tables and event log untouched when a write fails half-way", async () => {
    const t = await setup({ rules: { closeWhenAllBid: false } });
    const { coordinator, eventLog } = t;
    const agent = (await coordinator.submit({ type: "RegisterAgent", name: "a" })).agent!.id;
    const task = (await coordinator.submit({ type: "PostTask", description: "job" })).task!.id;
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    const before = await snapshot(t);
    const heard: string[] = [];
    eventLog.subscribe((event) => heard.push(event.event_type));
    // The close writes the task and the bid outcomes, then the disk "fails" before the events.
    const message = "injected: disk failed after the state rows were written";
    let clear: () => Promise<void>;
    if (engine === "sqlite") {
      const store = (coordinator as Coordinator).store;
      const realApply = store.apply.bind(store);
      const spy = vi.spyOn(store, "apply").mockImplementation((changes) => {
        realApply(changes);
        throw new Error(message);
      });
      clear = async () => spy.mockRestore();
    } else {
      // The PostgreSQL shell appends a batch's events after every record it writes.
      clear = await postgresFault(t, "event_log", message);
    }
    await expect(coordinator.submit({ type: "CloseAuction", task_id: task })).rejects.toThrow(/injected/);
    await clear();
    expect(await snapshot(t)).toEqual(before);
    expect(heard).toEqual([]);
    expect((await coordinator.getTask(task))?.status).toBe("bidding");
    expect(await coordinator.openBids(task)).toHaveLength(1);
    // And the same command goes through once the fault clears.
    await coordinator.submit({ type: "CloseAuction", task_id: task });
    expect((await coordinator.getTask(task))?.status).toBe("assigned");
    expect(heard).toEqual(["auction.closed", "task.assigned", "agent.status_changed"]);
  });

  it("surfaces a refused write as STORAGE_UNAVAILABLE and recovers when the database does", async () => {
    const t = await setup();
    const { coordinator, clock, tick } = t;
    await coordinator.submit({ type: "RegisterAgent", name: "a" });
    const due = (await coordinator.submit({ type: "PostTask", description: "due soon" })).task!.id;
    clock.advance(coordinator.rules.defaultAuctionMs);
    const before = await snapshot(t);
    // The database turns read-only under us.
    if (engine === "sqlite") (t.eventLog as SqliteEventLog).db.pragma("query_only = ON");
    else await setPostgresReadOnly(t, true);
    await expect(coordinator.submit({ type: "PostTask", description: "job" })).rejects.toThrow(
      expect.objectContaining({ code: "STORAGE_UNAVAILABLE", status: 503 }),
    );
    expect(await tick()).toBeUndefined(); // the due close fails: logged, not thrown
    expect(await snapshot(t)).toEqual(before);
    expect((await coordinator.getTask(due))?.status).toBe("bidding");
    if (engine === "sqlite") (t.eventLog as SqliteEventLog).db.pragma("query_only = OFF");
    else await setPostgresReadOnly(t, false);
    expect((await tick())?.events.map((e) => e.event_type)).toEqual(["auction.closed", "task.failed"]);
    expect((await coordinator.submit({ type: "PostTask", description: "job" })).task?.status).toBe("bidding");
  });

  it("makes the Python-era race impossible: an early completion cannot be overwritten by the close", async () => {
    const { coordinator, clock, tick } = await setup({ rules: { closeWhenAllBid: false } });
    const agent = (await coordinator.submit({ type: "RegisterAgent", name: "eager" })).agent!.id;
    const task = (await coordinator.submit({ type: "PostTask", description: "job" })).task!.id;
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    await expect(
      coordinator.submit({ type: "CompleteTask", task_id: task, agent_id: agent, result: "early" }),
    ).rejects.toThrow(expect.objectContaining({ code: "TASK_NOT_ACTIVE" }));
    clock.advance(coordinator.rules.defaultAuctionMs);
    await tick();
    expect(await coordinator.getTask(task)).toMatchObject({ status: "assigned", result: null });
    await coordinator.submit({ type: "CompleteTask", task_id: task, agent_id: agent, result: "on time" });
    await tick();
    expect(await coordinator.getTask(task)).toMatchObject({ status: "completed", result: "on time" });
  });

  it("expires a silent agent and re-auctions its running task to another", async () => {
    const { coordinator, clock, eventLog, tick } = await setup({ rules: { heartbeatTimeoutMs: 10_000 } });
    const quiet = (await coordinator.submit({ type: "RegisterAgent", name: "quiet" })).agent!.id;
    const task = (await coordinator.submit({ type: "PostTask", description: "job" })).task!.id;
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: quiet, bid_sats: 5 });
    await coordinator.submit({ type: "StartTask", task_id: task, agent_id: quiet });
    clock.advance(10_000);
    const healthy = (await coordinator.submit({ type: "RegisterAgent", name: "healthy" })).agent!.id;
    await tick();
    expect((await coordinator.getAgent(quiet))?.status).toBe("offline");
    expect(await coordinator.getTask(task)).toMatchObject({ status: "bidding", attempt: 2 });
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: healthy, bid_sats: 8 });
    expect(await coordinator.getTask(task)).toMatchObject({ status: "assigned", assigned_agent: healthy });
    expect((await eventLog.getAgentEvents(quiet)).map((e) => e.event_type)).toContain("agent.status_changed");
  });

  it("closes auctions on its own timer", async () => {
    const { coordinator } = await setup({
      clock: "wall",
      tickIntervalMs: 10,
      rules: { closeWhenAllBid: false },
    });
    await coordinator.start();
    try {
      const agent = (await coordinator.submit({ type: "RegisterAgent", name: "a" })).agent!.id;
      const task = (await coordinator.submit({ type: "PostTask", description: "quick", auction_ms: 150 }))
        .task!.id;
      await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 3 });
      const deadline = Date.now() + 5000;
      while ((await coordinator.getTask(task))?.status === "bidding" && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      expect(await coordinator.getTask(task)).toMatchObject({ status: "assigned", assigned_agent: agent });
    } finally {
      await coordinator.stop();
    }
  });
});

describe.each(ENGINES)("recovery from the tables on $name", ({ name: engine }) => {
  it("closes auctions that came due while it was down, among the recorded bids, and keeps running tasks", async () => {
    const first = await coordinatorOn(engine, { durable: true, rules: { closeWhenAllBid: false } });
    const before = first.coordinator;
    const a = (await before.submit({ type: "RegisterAgent", name: "a" })).agent!.id;
    const b = (await before.submit({ type: "RegisterAgent", name: "b" })).agent!.id;
    const running = (await before.submit({ type: "PostTask", description: "long job" })).task!.id;
    await before.submit({ type: "SubmitBid", task_id: running, agent_id: a, bid_sats: 5 });
    await before.submit({ type: "CloseAuction", task_id: running });
    await before.submit({ type: "StartTask", task_id: running, agent_id: a });
    const open = (await before.submit({ type: "PostTask", description: "open auction" })).task!.id;
    await before.submit({ type: "SubmitBid", task_id: open, agent_id: b, bid_sats: 30 });
    await first.close(); // the process stops

    first.clock.advance(60_000); // and is down past the auction's deadline
    const second = await coordinatorOn(engine, { where: first.where, clock: first.clock });
    const after = second.coordinator;
    await after.start();
    await after.stop();
    expect(await after.getTask(open)).toMatchObject({
      status: "assigned",
      assigned_agent: b,
      winning_bid_sats: 30,
    });
    expect(await after.getTask(running)).toMatchObject({ status: "running", assigned_agent: a });
    expect(await after.getAgent(a)).toMatchObject({ status: "offline" });
    expect((await second.eventLog.getTaskEvents(open)).map((e) => e.event_type)).toContain("auction.closed");
    // a comes back and finishes; nothing was lost.
    await after.submit({ type: "Heartbeat", agent_id: a });
    await after.submit({ type: "CompleteTask", task_id: running, agent_id: a, result: "done" });
    expect((await after.getTask(running))?.status).toBe("completed");
  });
});

describe.each(ENGINES)("hand-backs on $name", ({ name: engine }) => {
  it("writes the hand-back and the new round together, and a restart still knows the round was not counted", async () => {
    const first = await coordinatorOn(engine, { durable: true });
    const before = first.coordinator;
    const agent = (await before.submit({ type: "RegisterAgent", name: "stopping" })).agent!.id;
    const task = (await before.submit({ type: "PostTask", description: "long job" })).task!.id;
    await before.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    await before.submit({ type: "StartTask", task_id: task, agent_id: agent });
    const released = await before.submit({
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
    expect(await first.sql("SELECT status, attempt, releases FROM tasks WHERE id = ?", task)).toEqual([
      { status: "bidding", attempt: 2, releases: 1 },
    ]);
    await first.close();

    const after = (await coordinatorOn(engine, { where: first.where, clock: first.clock })).coordinator;
    expect(await after.getTask(task)).toMatchObject({ status: "bidding", attempt: 2, releases: 1 });
  });
});

describe.each(ENGINES)("group-committed commands on $name", ({ name: engine }) => {
  it("commits commands submitted together in one transaction, each seeing the ones before it", async () => {
    const { coordinator, eventLog } = await coordinatorOn(engine, { rules: { closeWhenAllBid: false } });
    const agents: string[] = [];
    for (const name of ["a", "b", "c"])
      agents.push((await coordinator.submit({ type: "RegisterAgent", name })).agent!.id);
    const task = (await coordinator.submit({ type: "PostTask", description: "job" })).task!.id;
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
    expect(await coordinator.getTask(task)).toMatchObject({
      status: "assigned",
      assigned_agent: agents[1],
      winning_bid_sats: 20,
    });
  });

  it("rejects only the command whose extra write fails", async () => {
    const { coordinator, eventLog } = await coordinatorOn(engine);
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
    expect((await coordinator.listAgents()).map((a) => a.name).sort()).toEqual(["first", "third"]);
    expect((await eventLog.listEvents()).events.map((e) => e.data.name)).toEqual(["first", "third"]);
  });

  it("rejects the whole batch, keeping nothing of it in the tables or in memory, when the commit fails", async () => {
    const t = await coordinatorOn(engine);
    const { coordinator } = t;
    await coordinator.submit({ type: "RegisterAgent", name: "kept" });
    const message = "injected: the commit failed";
    let clear: () => Promise<void>;
    if (engine === "sqlite") {
      const eventLog = t.eventLog as SqliteEventLog;
      const realTransaction = eventLog.transaction.bind(eventLog);
      // The batch's transaction runs every command, then fails at the end and rolls back; the
      // SQLite shell, whose memory already took the batch, reloads it from the tables.
      const spy = vi.spyOn(eventLog, "transaction").mockImplementationOnce((body) =>
        realTransaction((tx) => {
          body(tx);
          throw new Error(message);
        }),
      );
      clear = async () => spy.mockRestore();
    } else {
      // A deferred constraint fails the batch's COMMIT, after every command of it ran.
      clear = await postgresFault(t, "agents", message, { atCommit: true });
    }
    const results = await Promise.allSettled([
      coordinator.submit({ type: "RegisterAgent", name: "lost-1" }),
      coordinator.submit({ type: "RegisterAgent", name: "lost-2" }),
    ]);
    await clear();
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(results[0]).toMatchObject({ reason: { message } });
    expect((await t.sql("SELECT name FROM agents")).map((row) => row.name)).toEqual(["kept"]);
    expect((await coordinator.listAgents()).map((a) => a.name)).toEqual(["kept"]);
    await expect(coordinator.submit({ type: "RegisterAgent", name: "after" })).resolves.toMatchObject({
      agent: { name: "after" },
    });
  });
});
