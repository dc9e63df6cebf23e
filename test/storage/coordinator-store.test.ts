/**
 * The coordinator's store on both engines, side by side: random histories decided by the pure
 * core are written to an SQLite store and a PostgreSQL store alike, and every read the API and
 * the dashboard make must answer the same on both (cursors aside, which are each engine's own).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Agent, AgentStatus, Command, StateChanges, Task } from "../../src/coordinator/types.js";
import { inTransaction } from "../../src/storage/postgres/database.js";
import { PostgresCoordinatorStore } from "../../src/storage/postgres/coordinator-store.js";
import type { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import type { BidCursor, BoardCursor } from "../../src/storage/coordinator-records.js";
import { CoordinatorStore } from "../../src/storage/sqlite/coordinator-store.js";
import { POSTGRES } from "../helpers/engines.js";
import { openTestLog } from "../helpers/event-log.js";
import { havePostgres } from "../helpers/postgres.js";
import { scenario } from "../coordinator/scenario.js";

/** Names that sort differently by bytes, by ASCII folding and by a locale: the board's order must be SQLite's. */
const NAMES = ["alpha", "Alpha", "ALPHA", "beta", "Zed", "élan", "Émile", "bob-2", "bob_1", "b", "ßeta"];
const STATUSES: AgentStatus[] = ["idle", "busy", "offline"];

type Step =
  | { kind: "register"; name: number; capacity: number }
  | { kind: "post"; caps: boolean }
  | { kind: "bid"; agent: number; task: number; sats: number }
  | { kind: "advance"; ms: number }
  | { kind: "start"; task: number }
  | { kind: "finish"; task: number; ok: boolean }
  | { kind: "cancel"; task: number }
  | { kind: "leave"; agent: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant("register" as const),
    name: fc.nat(NAMES.length - 1),
    capacity: fc.integer({ min: 1, max: 2 }),
  }),
  fc.record({ kind: fc.constant("post" as const), caps: fc.boolean() }),
  fc.record({
    kind: fc.constant("bid" as const),
    agent: fc.nat(20),
    task: fc.nat(20),
    sats: fc.integer({ min: 1, max: 500 }),
  }),
  fc.record({ kind: fc.constant("advance" as const), ms: fc.constantFrom(200, 1500, 40_000) }),
  fc.record({ kind: fc.constant("start" as const), task: fc.nat(20) }),
  fc.record({ kind: fc.constant("finish" as const), task: fc.nat(20), ok: fc.boolean() }),
  fc.record({ kind: fc.constant("cancel" as const), task: fc.nat(20) }),
  fc.record({ kind: fc.constant("leave" as const), agent: fc.nat(20) }),
);

/** Run the steps through the pure core; the changes of every accepted decision, in order. */
function history(steps: Step[]): { changes: StateChanges[]; agents: string[]; tasks: string[] } {
  const s = scenario({ closeWhenAllBid: true });
  const agents: string[] = [];
  const tasks: string[] = [];
  const changes: StateChanges[] = [];
  const apply = (command: Command) => {
    const decision = s.run(command);
    if (decision.ok) changes.push(decision.changes);
    return decision;
  };
  const pick = <T>(list: T[], n: number) => (list.length === 0 ? undefined : list[n % list.length]);
  for (const st of steps) {
    switch (st.kind) {
      case "register": {
        const d = apply({
          type: "RegisterAgent",
          name: NAMES[st.name] as string,
          capabilities: ["x"],
          max_concurrent: st.capacity,
        });
        if (d.ok && d.subject.agent) agents.push(d.subject.agent.id);
        break;
      }
      case "post": {
        const d = apply({
          type: "PostTask",
          description: `task ${tasks.length}`,
          required_capabilities: st.caps ? ["x"] : [],
          auction_ms: 1000,
        });
        if (d.ok && d.subject.task) tasks.push(d.subject.task.id);
        break;
      }
      case "bid": {
        const agent = pick(agents, st.agent);
        const task = pick(tasks, st.task);
        if (agent && task) apply({ type: "SubmitBid", agent_id: agent, task_id: task, bid_sats: st.sats });
        break;
      }
      case "advance":
        s.advance(st.ms);
        for (const agent of agents) if (st.ms < 30_000) apply({ type: "Heartbeat", agent_id: agent });
        apply({ type: "Tick" });
        break;
      case "start":
      case "finish":
      case "cancel": {
        const task = pick(tasks, st.task);
        const held = task === undefined ? undefined : s.state.getTask(task);
        if (task === undefined) break;
        if (st.kind === "cancel") apply({ type: "CancelTask", task_id: task });
        else if (held?.assigned_agent) {
          if (st.kind === "start") apply({ type: "StartTask", task_id: task, agent_id: held.assigned_agent });
          else if (st.ok)
            apply({ type: "CompleteTask", task_id: task, agent_id: held.assigned_agent, result: "done" });
          else apply({ type: "FailTask", task_id: task, agent_id: held.assigned_agent, reason: "broke" });
        }
        break;
      }
      case "leave": {
        const agent = pick(agents, st.agent);
        if (agent) apply({ type: "DeregisterAgent", agent_id: agent });
        break;
      }
    }
  }
  return { changes, agents, tasks };
}

/** Every page of a cursor walk, cursors left out: what a client paging through sees. */
async function walk<P extends { next_cursor: unknown }, C>(
  page: (cursor: C | undefined) => P | Promise<P>,
  items: (p: P) => unknown[],
  toCursor: (c: NonNullable<P["next_cursor"]>) => C,
): Promise<unknown[]> {
  const seen: unknown[] = [];
  let cursor: C | undefined;
  for (let pages = 0; pages < 1000; pages += 1) {
    const p = await page(cursor);
    seen.push(...items(p));
    if (p.next_cursor === null) return seen;
    cursor = toCursor(p.next_cursor as NonNullable<P["next_cursor"]>);
  }
  throw new Error("no end to the pages");
}

const byId = <T extends { id: string }>(list: T[]) => [...list].sort((a, b) => (a.id < b.id ? -1 : 1));

describe.skipIf(!havePostgres)("the coordinator store on SQLite and PostgreSQL", () => {
  it("answers every read the same, after any history the core decides", async () => {
    const log = (await POSTGRES.openLog()) as PostgresEventLog;
    const pgStore = new PostgresCoordinatorStore(log.pool);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 60 }), async (steps) => {
        run += 1;
        await log.pool.query(
          "TRUNCATE agents, tasks, bids, agent_stats, agent_stats_deltas, task_status_counts, task_status_count_deltas, agent_report_usage CASCADE",
        );
        const sqliteLog = openTestLog();
        const sqlite = new CoordinatorStore(sqliteLog.db);
        const { changes, agents, tasks } = history(steps);
        for (const change of changes) {
          sqliteLog.transaction(() => sqlite.apply(change));
          await inTransaction(log.pool, (client) => pgStore.apply(client, change));
        }
        const both = async <T>(
          read: (store: CoordinatorStore | PostgresCoordinatorStore) => T | Promise<T>,
          what: string,
        ) => expect(await read(pgStore), `${what} (run ${run})`).toEqual(await read(sqlite));

        await both((s) => s.taskCounts(), "task counts");
        for (const id of agents) {
          await both((s) => s.agentStats(id), `stats of ${id}`);
          await both((s) => s.getAgent(id), `agent ${id}`);
        }
        for (const id of tasks) {
          await both((s) => s.getTask(id), `task ${id}`);
          await both((s) => s.getBids(id), `bids of ${id}`);
          const task = sqlite.getTask(id) as Task;
          for (const sealed of [undefined, { attempt: task.attempt, ownAgent: agents[0] ?? null }]) {
            await both((s) => s.bidRounds(id, 2, sealed), `rounds of ${id}`);
            await both(
              (s) =>
                walk(
                  (after: BidCursor | undefined) => s.listBids({ task_id: id, after, sealed, limit: 2 }),
                  (p) => p.bids,
                  (c) => c,
                ),
              `bid pages of ${id}`,
            );
          }
        }
        await both(async (s) => {
          const set = await s.loadWorkingSet();
          return {
            agents: byId(set.agents),
            tasks: byId(set.tasks),
            bids: [...set.bids].sort((a, b) =>
              `${a.task_id}${a.agent_id}` < `${b.task_id}${b.agent_id}` ? -1 : 1,
            ),
          };
        }, "working set");
        for (const status of [
          undefined,
          "bidding",
          "assigned",
          "completed",
          "failed",
          "cancelled",
        ] as const) {
          for (const agent of [undefined, ...agents.slice(0, 2)]) {
            await both(
              (s) =>
                walk(
                  (before) => s.listTasks({ status, agent_id: agent, before, limit: 3 }),
                  (p) => p.tasks.map((t: Task) => t.id),
                  Number,
                ),
              `task pages ${status ?? "any"} ${agent ?? "anyone"}`,
            );
          }
        }
        for (const status of [undefined, ...STATUSES]) {
          await both(
            (s) =>
              walk(
                (after) => s.listAgents({ status, after, limit: 2 }),
                (p) => p.agents.map((a: Agent) => a.id),
                Number,
              ),
            `agent pages ${status ?? "any"}`,
          );
        }
        await both(
          (s) =>
            walk(
              (after: BoardCursor | undefined) => s.boardAgents({ after, limit: 2 }),
              (p) => p.agents.map((a: Agent) => `${a.status} ${a.name}`),
              (c) => c,
            ),
          "the dashboard's agent list",
        );
        await both((s) => s.recentAuctions(5), "recent auctions");

        // Retention of finished work, a chunk at a time on each: the same rows go, and the counts
        // kept beside them follow.
        const cutoff = "9999-01-01T00:00:00.000Z";
        let removed: unknown[] = [];
        for (
          let chunk = sqliteLog.transaction(() => sqlite.deleteFinishedTasks(cutoff, 2));
          chunk.tasks > 0;
        ) {
          removed.push(chunk);
          chunk = sqliteLog.transaction(() => sqlite.deleteFinishedTasks(cutoff, 2));
        }
        const removedOnSqlite = removed;
        removed = [];
        for (;;) {
          const chunk = await inTransaction(log.pool, (client) =>
            pgStore.deleteFinishedTasks(client, cutoff, 2),
          );
          if (chunk.tasks === 0) break;
          removed.push(chunk);
        }
        // Which tasks share a chunk is each engine's to choose among equal end times; what goes is not.
        const total = (chunks: unknown[]) =>
          (chunks as { tasks: number; bids: number; idempotency_keys: number }[]).reduce(
            (sum, c) => ({
              tasks: sum.tasks + c.tasks,
              bids: sum.bids + c.bids,
              keys: sum.keys + c.idempotency_keys,
            }),
            { tasks: 0, bids: 0, keys: 0 },
          );
        expect(total(removed)).toEqual(total(removedOnSqlite));
        for (const id of tasks) await both((s) => s.getTask(id), `task ${id} after retention`);
        const leftOnSqlite = sqlite.deleteLeftAgents(cutoff, { left_at: "", id: "" }, 100);
        const leftOnPostgres = await inTransaction(log.pool, (client) =>
          pgStore.deleteLeftAgents(client, cutoff, { left_at: "", id: "" }, 100),
        );
        expect(leftOnPostgres).toEqual(leftOnSqlite);
        await both((s) => s.taskCounts(), "task counts after retention");
        for (const id of agents) await both((s) => s.agentStats(id), `stats of ${id} after retention`);
        sqliteLog.close();
      }),
      { numRuns: 60 },
    );
  }, 120_000);
});
