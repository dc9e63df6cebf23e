/**
 * The coordinator's command path on PostgreSQL (PostgresCommandRunner) against the SQLite
 * coordinator's: the same commands at the same times give the same events, records and
 * refusals; a refused command in a batch leaves nothing behind; and two runners on one database
 * (two processes) closing the same auction at once give it one winner, and closing two auctions
 * at once to the same agent never give it more than it has room for.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import { DEFAULT_RULES, type Command, type CoordinatorRules } from "../../src/coordinator/types.js";
import { PostgresCommandRunner } from "../../src/storage/postgres/command-runner.js";
import { PostgresCoordinatorStore } from "../../src/storage/postgres/coordinator-store.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import { POSTGRES } from "../helpers/engines.js";
import { fakeClock, openTestLog, silentLogger } from "../helpers/event-log.js";
import { createTestDatabase, havePostgres } from "../helpers/postgres.js";

function counter() {
  let n = 0;
  return () => `00000000-0000-4000-8000-${String((n += 1)).padStart(12, "0")}`;
}

function runnerOn(
  log: PostgresEventLog,
  clock: () => Date,
  rules: Partial<CoordinatorRules> = {},
  newId = counter(),
) {
  return new PostgresCommandRunner({
    eventLog: log,
    store: new PostgresCoordinatorStore(log.pool),
    rules: { ...DEFAULT_RULES, ...rules },
    clock,
    newId,
  });
}

/**
 * Two runners on one new database, as two processes would be (each its own event log and pool,
 * and distinct id ranges, as their own generators would give); closed after `body`.
 */
async function withTwoProcesses(
  body: (processes: {
    logs: PostgresEventLog[];
    runners: PostgresCommandRunner[];
    first: PostgresCommandRunner;
    second: PostgresCommandRunner;
  }) => Promise<void>,
): Promise<void> {
  const url = await createTestDatabase();
  const clock = fakeClock();
  const logs = [0, 1].map(() => new PostgresEventLog({ url, logger: silentLogger, clock: clock.now }));
  try {
    await Promise.all(logs.map((log) => log.whenReady()));
    const runners = logs.map((log, i) => {
      let n = 0;
      return runnerOn(
        log,
        clock.now,
        { closeWhenAllBid: true },
        () => `${i}0000000-0000-4000-8000-${String((n += 1)).padStart(12, "0")}`,
      );
    });
    const [first, second] = runners as [PostgresCommandRunner, PostgresCommandRunner];
    await body({ logs, runners, first, second });
  } finally {
    await Promise.all(logs.map((log) => log.close()));
  }
}

type Pick = { kind: number; a: number; t: number; n: number; ms: number };

const AGENT_IDS = [1, 2, 3].map((n) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`);
const REGISTER: Command[] = [0, 1, 2].map((i) => ({
  type: "RegisterAgent",
  name: `agent ${i}`,
  capabilities: i === 2 ? [] : ["x"],
  max_concurrent: 1,
}));

/** One command over a small swarm: the agents registered first (ids 1-3), the tasks posted so far. */
function commandFor(p: Pick, tasks: readonly string[]): Command {
  const task = tasks.length === 0 ? "no-task-yet" : (tasks[p.t % tasks.length] as string);
  const agent = AGENT_IDS[p.a % 3] as string;
  const kinds: Command[] = [
    {
      type: "PostTask",
      description: `task ${p.n}`,
      required_capabilities: p.n % 2 === 0 ? ["x"] : [],
      auction_ms: 1000,
      // The lifecycle's timers, short enough to come due within a run: awards lapse, runs time
      // out, failures are retried after a backoff.
      ack_ms: 500 + (p.n % 3) * 500,
      ...(p.n % 3 === 0 ? { timeout_ms: 1000 } : {}),
      max_attempts: 1 + (p.n % 3),
      retry_backoff_ms: (p.n % 4) * 300,
      ...(p.n % 7 === 0 ? { assign_to: agent } : {}),
      ...(p.n % 5 === 1 && tasks.length > 0 ? { depends_on: [task] } : {}),
      ...(p.n % 3 === 2 ? { award: "best_value" as const } : {}),
    },
    { type: "AssignTask", task_id: task, agent_id: agent },
    { type: "RetryTask", task_id: task },
    { type: "StreamSeen", agent_id: agent },
    { type: "StreamClosed", agent_id: agent },
    { type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 1 + (p.n % 50) },
    { type: "StartTask", task_id: task, agent_id: agent },
    {
      type: "RecordToolCall",
      task_id: task,
      agent_id: agent,
      tool: "search",
      phase: "called",
      call_id: `c${p.n}`,
    },
    { type: "CompleteTask", task_id: task, agent_id: agent, result: "ok" },
    { type: "FailTask", task_id: task, agent_id: agent, reason: "broke" },
    { type: "CancelTask", task_id: task },
    { type: "Heartbeat", agent_id: agent },
    { type: "Tick" },
    { type: "ReleaseTask", task_id: task, agent_id: agent },
  ];
  return kinds[p.kind % kinds.length] as Command;
}

describe.skipIf(!havePostgres)("the coordinator's commands on PostgreSQL", () => {
  it("decide as on SQLite: the same events, records and refusals for any commands", async () => {
    const pick = fc.record({
      kind: fc.nat(13),
      a: fc.nat(2),
      t: fc.nat(5),
      n: fc.nat(1000),
      ms: fc.constantFrom(0, 300, 1200, 40_000),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(pick, { minLength: 1, maxLength: 40 }), async (picks) => {
        const sqliteClock = fakeClock();
        const pgClock = fakeClock();
        const sqliteLog = openTestLog({ clock: sqliteClock.now });
        const coordinator = new Coordinator({
          eventLog: sqliteLog,
          logger: silentLogger,
          clock: sqliteClock.now,
          newId: counter(),
        });
        const pgLog = (await POSTGRES.openLog({ clock: pgClock.now })) as PostgresEventLog;
        const runner = runnerOn(pgLog, pgClock.now);
        const taskIds: string[] = [];
        const steps = [
          ...REGISTER.map((command) => ({ command, ms: 0 })),
          ...picks.map((p) => ({ p, ms: p.ms })),
        ];
        for (const step of steps) {
          sqliteClock.advance(step.ms);
          pgClock.advance(step.ms);
          const command = "command" in step ? step.command : commandFor(step.p, taskIds);
          let onSqlite: unknown;
          try {
            onSqlite = { ok: true, result: coordinator.execute(command) };
          } catch (error) {
            onSqlite = { ok: false, code: (error as { code?: string }).code };
          }
          const [outcome] = await runner.run([{ command }]);
          const onPostgres = outcome?.ok
            ? outcome
            : { ok: false, code: (outcome?.error as { code?: string } | undefined)?.code };
          expect(onPostgres, command.type).toEqual(onSqlite);
          if (command.type === "PostTask" && outcome?.ok && outcome.result.task)
            taskIds.push(outcome.result.task.id);
        }
        expect((await pgLog.listEvents({ limit: 1000 })).events).toEqual(
          sqliteLog.listEvents({ limit: 1000 }).events,
        );
        const sqliteSet = coordinator.store.loadWorkingSet();
        const pgSet = await runner.workingSet();
        expect([...pgSet.agents()].sort((a, b) => (a.id < b.id ? -1 : 1))).toEqual(
          [...sqliteSet.agents].sort((a, b) => (a.id < b.id ? -1 : 1)),
        );
        sqliteLog.close();
      }),
      { numRuns: 25 },
    );
  }, 120_000);

  it("takes back a refused command's rows only, and the batch's other commands commit", async () => {
    const clock = fakeClock();
    const log = (await POSTGRES.openLog({ clock: clock.now })) as PostgresEventLog;
    const runner = runnerOn(log, clock.now);
    const outcomes = await runner.run([
      { command: { type: "RegisterAgent", name: "one" } },
      { command: { type: "SubmitBid", task_id: "no-such-task", agent_id: "nobody", bid_sats: 5 } },
      { command: { type: "PostTask", description: "kept" } },
    ]);
    expect(outcomes.map((o) => o.ok)).toEqual([true, false, true]);
    expect(outcomes[1]).toMatchObject({ ok: false, error: { code: "TASK_NOT_FOUND" } });
    const events = (await log.listEvents()).events;
    expect(events.map((e) => e.event_type)).toEqual(["agent.joined", "task.created", "task.bidding"]);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it("gives an auction one winner when two processes close it at once", async () => {
    await withTwoProcesses(async ({ logs, first, second }) => {
      const agents = [];
      for (const name of ["a", "b", "c", "d"]) {
        const [o] = await first.run([{ command: { type: "RegisterAgent", name } }]);
        if (o?.ok && o.result.agent) agents.push(o.result.agent.id);
      }
      const winners: string[] = [];
      for (let round = 0; round < 10; round += 1) {
        const [posted] = await second.run([
          { command: { type: "PostTask", description: `t${round}`, auction_ms: 60_000 } },
        ]);
        const taskId = posted?.ok ? (posted.result.task?.id as string) : "";
        await first.run([
          { command: { type: "SubmitBid", task_id: taskId, agent_id: agents[0] as string, bid_sats: 10 } },
        ]);
        await first.run([
          { command: { type: "SubmitBid", task_id: taskId, agent_id: agents[1] as string, bid_sats: 20 } },
        ]);
        // The last two bids, through different processes at once: whichever commits second closes it.
        await Promise.all([
          first.run([
            { command: { type: "SubmitBid", task_id: taskId, agent_id: agents[2] as string, bid_sats: 5 } },
          ]),
          second.run([
            { command: { type: "SubmitBid", task_id: taskId, agent_id: agents[3] as string, bid_sats: 5 } },
          ]),
        ]);
        const events = await logs[0]!.getTaskEvents(taskId);
        expect(events.filter((e) => e.event_type === "auction.closed")).toHaveLength(1);
        const assigned = events.filter((e) => e.event_type === "task.assigned");
        expect(assigned).toHaveLength(1);
        // Lowest bid, the earlier of the two equal ones as the database ordered them.
        const bids = events.filter((e) => e.event_type === "bid.submitted" && e.data.bid_sats === 5);
        expect(assigned[0]?.agent_id).toBe(bids[0]?.agent_id);
        winners.push(assigned[0]?.agent_id as string);
        await first.run([{ command: { type: "CancelTask", task_id: taskId } }]);
      }
      expect(winners).toHaveLength(10);
    });
  });
  it("never gives an agent more tasks than it has room for when two processes close two auctions to it at once", async () => {
    await withTwoProcesses(async ({ logs, runners, first, second }) => {
      const register = async (name: string, max_concurrent: number) => {
        const [o] = await first.run([{ command: { type: "RegisterAgent", name, max_concurrent } }]);
        return o?.ok ? (o.result.agent?.id as string) : "";
      };
      // The cheap one has room for one task; the dear ones for many.
      const cheap = await register("cheap", 1);
      const dear = [await register("dear 1", 10), await register("dear 2", 10)] as const;
      for (let round = 0; round < 10; round += 1) {
        const tasks: string[] = [];
        for (const runner of runners) {
          const [posted] = await runner.run([
            { command: { type: "PostTask", description: `r${round}`, auction_ms: 60_000 } },
          ]);
          tasks.push(posted?.ok ? (posted.result.task?.id as string) : "");
        }
        const bid = (runner: PostgresCommandRunner, task: number, agent: string, bid_sats: number) =>
          runner.run([
            { command: { type: "SubmitBid", task_id: tasks[task] as string, agent_id: agent, bid_sats } },
          ]);
        await bid(first, 0, cheap, 1);
        await bid(first, 1, cheap, 1);
        await bid(first, 0, dear[1], 50);
        await bid(first, 1, dear[0], 50);
        // The last bid of each auction, by a different dear agent through each process at once:
        // each closes its auction to the cheap agent, whose row neither bid locks at first (it
        // is not the bidder) and the two lock nothing in common; read stale, the cheap agent
        // would get both.
        await Promise.all([bid(first, 0, dear[0], 50), bid(second, 1, dear[1], 50)]);
        const winners = [];
        for (const taskId of tasks) {
          const assigned = (await logs[0]!.getTaskEvents(taskId)).filter(
            (e) => e.event_type === "task.assigned",
          );
          expect(assigned).toHaveLength(1);
          winners.push(assigned[0]?.agent_id);
        }
        expect(winners.filter((winner) => winner === cheap)).toHaveLength(1);
        expect((await first.workingSet()).tasksHeldBy(cheap)).toHaveLength(1);
        for (const taskId of tasks) await first.run([{ command: { type: "CancelTask", task_id: taskId } }]);
      }
    });
  });
  it("never leaves a task with an agent that left while another process closed an auction to it", async () => {
    await withTwoProcesses(async ({ first, second }) => {
      const register = async (name: string) => {
        const [o] = await first.run([{ command: { type: "RegisterAgent", name, max_concurrent: 10 } }]);
        return o?.ok ? (o.result.agent?.id as string) : "";
      };
      const last = await register("bids last");
      for (let round = 0; round < 10; round += 1) {
        // A fresh winner each round, with room for many: its row does not change when it wins.
        const winner = await register(`winner ${round}`);
        const [posted] = await first.run([
          { command: { type: "PostTask", description: `r${round}`, auction_ms: 60_000 } },
        ]);
        const taskId = posted?.ok ? (posted.result.task?.id as string) : "";
        await first.run([{ command: { type: "SubmitBid", task_id: taskId, agent_id: winner, bid_sats: 1 } }]);
        // The closing bid through one process while the winner leaves through the other.
        await Promise.all([
          first.run([{ command: { type: "SubmitBid", task_id: taskId, agent_id: last, bid_sats: 50 } }]),
          second.run([{ command: { type: "DeregisterAgent", agent_id: winner } }]),
        ]);
        const task = (await first.workingSet()).getTask(taskId);
        // Given to the winner and put up again when it left, or given to the last bidder.
        expect(task?.assigned_agent ?? null).not.toBe(winner);
        await first.run([{ command: { type: "CancelTask", task_id: taskId } }]);
      }
    });
  });

  it("reads, within one batch, the tasks that batch ended before: not their stale rows", async () => {
    await withTwoProcesses(async ({ first }) => {
      const one = async (command: Command) => {
        const [outcome] = await first.run([{ command }]);
        if (!outcome?.ok) throw new Error(`${command.type} refused: ${String(outcome?.error)}`);
        return outcome.result;
      };
      const agent = (await one({ type: "RegisterAgent", name: "runner", max_concurrent: 5 })).agent!.id;
      const dependency = (await one({ type: "PostTask", description: "d", auction_ms: 60_000 })).task!.id;
      await one({ type: "SubmitBid", task_id: dependency, agent_id: agent, bid_sats: 1 });
      await one({ type: "StartTask", task_id: dependency, agent_id: agent });
      // One batch: the completion, a post on it, and the completion again.
      const [completed, posted, again] = await first.run([
        { command: { type: "CompleteTask", task_id: dependency, agent_id: agent } },
        { command: { type: "PostTask", description: "after", depends_on: [dependency] } },
        { command: { type: "CompleteTask", task_id: dependency, agent_id: agent } },
      ]);
      expect(completed?.ok).toBe(true);
      expect(posted?.ok && posted.result.task).toMatchObject({ status: "bidding", waiting_on: [] });
      expect(again?.ok ? "accepted" : (again?.error as { code?: string }).code).toBe("TASK_FINAL");
      // One batch: two re-runs of one cancelled task; the second is refused.
      const cancelled = (await one({ type: "PostTask", description: "c" })).task!.id;
      await one({ type: "CancelTask", task_id: cancelled });
      const [rerun, twice] = await first.run([
        { command: { type: "RetryTask", task_id: cancelled } },
        { command: { type: "RetryTask", task_id: cancelled } },
      ]);
      expect(rerun?.ok).toBe(true);
      expect(twice?.ok ? "accepted" : (twice?.error as { code?: string }).code).toBe("TASK_ALREADY_RETRIED");
    });
  });

  it("never leaves a dependent waiting on a task that completed while another process posted it", async () => {
    await withTwoProcesses(async ({ first, second }) => {
      const [registered] = await first.run([
        { command: { type: "RegisterAgent", name: "runner", max_concurrent: 50 } },
      ]);
      const agent = registered?.ok ? (registered.result.agent?.id as string) : "";
      const one = async (runner: typeof first, command: Command) => {
        const [outcome] = await runner.run([{ command }]);
        if (!outcome?.ok) throw new Error(`${command.type} refused: ${String(outcome?.error)}`);
        return outcome.result;
      };
      for (let round = 0; round < 15; round += 1) {
        const dependency = (
          await one(first, { type: "PostTask", description: `d${round}`, auction_ms: 60_000 })
        ).task!.id;
        await one(first, { type: "SubmitBid", task_id: dependency, agent_id: agent, bid_sats: 1 });
        await one(first, { type: "StartTask", task_id: dependency, agent_id: agent });
        // The dependency completes through one process while the other posts a task on it.
        const [, posted] = await Promise.all([
          one(first, { type: "CompleteTask", task_id: dependency, agent_id: agent }),
          one(second, { type: "PostTask", description: `after ${round}`, depends_on: [dependency] }),
        ]);
        const dependent = (await first.workingSet()).getTask(posted.task!.id);
        // Opened at its post (it saw the completion) or by the completion (it saw the dependent).
        expect(dependent).toMatchObject({ status: "bidding", waiting_on: [] });
        await one(first, { type: "CancelTask", task_id: posted.task!.id });
      }
    });
  });
});
