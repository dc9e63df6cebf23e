/**
 * The crash scenario's checks must catch what they look for: each is shown a database with
 * exactly that defect planted in it, on each engine (the checks are written once, but each
 * engine spells a JSON field and the store's own soundness its own way).
 */
import { afterEach, describe, expect, it } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CoordinatorPort } from "../../src/coordinator/port.js";
import { PostgresCoordinator } from "../../src/coordinator/postgres-coordinator.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { inspect, type Inspector } from "../../reliability/invariants.js";
import { ENGINES, type Engine } from "../helpers/engines.js";
import { openTestLog, silentLogger } from "../helpers/event-log.js";
import { createTestDatabase } from "../helpers/postgres.js";
import { tempDbPath } from "../helpers/temp-dir.js";

const RULES = { closeWhenAllBid: false };
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A coordinator on a new database of `engine`, and the string the Inspector opens it by. */
async function openStore(engine: Engine): Promise<{
  db: string;
  log: SqliteEventLog | PostgresEventLog;
  coordinator: CoordinatorPort;
}> {
  if (engine.name === "sqlite") {
    const path = tempDbPath();
    const log = openTestLog({ path });
    const coordinator = new Coordinator({ eventLog: log, logger: silentLogger, rules: RULES });
    cleanups.push(async () => coordinator.stop());
    return { db: path, log, coordinator };
  }
  const url = await createTestDatabase();
  const log = new PostgresEventLog({ url, logger: silentLogger });
  cleanups.push(() => log.close());
  await log.whenReady();
  const coordinator = new PostgresCoordinator({ eventLog: log, logger: silentLogger, rules: RULES });
  cleanups.push(() => coordinator.stop());
  return { db: url, log, coordinator };
}

describe.each(ENGINES)("the crash scenario's invariants on $name", (engine) => {
  /** An agent that bid on an open task: everything as the product wrote it. */
  async function sound() {
    const { db, log, coordinator } = await openStore(engine);
    const agent = (await coordinator.submit({ type: "RegisterAgent", name: "a" })).agent!.id;
    const task = (await coordinator.submit({ type: "PostTask", description: "x", auction_ms: 60_000 })).task!
      .id;
    await coordinator.submit({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
    return {
      agent,
      task,
      sql: (statement: string, ...params: unknown[]) => engine.sql(log, statement, ...params),
      /** An event written under the product, numbered after the newest. */
      plant: (eventType: string, ids: { task_id?: string; agent_id?: string }, data: object) =>
        engine.sql(
          log,
          `INSERT INTO event_log (seq, id, event_type, source, task_id, agent_id, data, timestamp)
           VALUES ((SELECT MAX(seq) + 1 FROM event_log), ?, ?, 'planted', ?, ?, ?, '2026-01-01T00:00:00.000Z')`,
          `planted-${Math.random().toString(36).slice(2)}`,
          eventType,
          ids.task_id ?? null,
          ids.agent_id ?? null,
          JSON.stringify(data),
        ),
      inspect: <T>(use: (i: Inspector) => Promise<T>) => inspect(db, use),
    };
  }

  it("pass on a database the product wrote", async () => {
    const { agent, task, inspect } = await sound();
    expect(await inspect((i) => i.checkStore())).toEqual([]);
    expect(
      await inspect((i) =>
        i.checkAcknowledged([
          { kind: "task", task_id: task, event_type: "task.created" },
          { kind: "agent", agent_id: agent, event_type: "agent.joined" },
          { kind: "bid", task_id: task, agent_id: agent, bid_sats: 5, attempt: 1 },
        ]),
      ),
    ).toEqual([]);
    expect(await inspect((i) => i.checkNothingStuck(30_000, 0))).toEqual([]);
    expect(await inspect((i) => i.count("SELECT COUNT(*) FROM event_log"))).toBeGreaterThanOrEqual(4);
  });

  it("find a gap in seq, a duplicated event and a state the log does not explain", async () => {
    const { task, sql, plant, inspect } = await sound();
    await sql("DELETE FROM event_log WHERE event_type = 'task.bidding'");
    await plant("task.created", { task_id: task }, {});
    await sql("UPDATE tasks SET status = 'completed' WHERE id = ?", task);
    // One more counted than there are (an upsert: on PostgreSQL the totals may not have the row yet).
    await sql(
      "INSERT INTO task_status_counts (status, count) VALUES ('completed', 1) " +
        "ON CONFLICT (status) DO UPDATE SET count = task_status_counts.count + 1",
    );
    const found = (await inspect((i) => i.checkStore())).join("\n");
    expect(found).toContain("seq has gaps");
    expect(found).toContain("a task created twice");
    expect(found).toContain("is completed without its event");
    expect(found).toContain("task_status_counts keeps 2 completed tasks, there are 1");
  });

  it("find an auction round closed twice, a tool report stored twice and a bid stored twice unchanged", async () => {
    const { agent, task, plant, inspect } = await sound();
    const ids = { task_id: task, agent_id: agent };
    for (let n = 0; n < 2; n += 1) {
      await plant(
        "auction.closed",
        { task_id: task },
        { attempt: 1, bids: 1, winner: agent, winning_bid_sats: 5 },
      );
      await plant("tool.called", ids, { call_id: "c1", tool: "search" });
    }
    await plant("bid.submitted", ids, { bid_sats: 5, replaced_bid_sats: 5, attempt: 1 });
    const found = (await inspect((i) => i.checkStore())).join("\n");
    expect(found).toContain(`an auction round closed twice: ${task} round 1 (2×)`);
    expect(found).toContain(`a tool report stored twice: ${task} tool.called c1 (2×)`);
    expect(found).toContain(`a bid stored twice unchanged: ${task} ${agent} (1×)`);
  });

  it("find an acknowledged event that is missing", async () => {
    const { agent, task, inspect } = await sound();
    const lost = await inspect((i) =>
      i.checkAcknowledged([
        { kind: "bid", task_id: task, agent_id: agent, bid_sats: 6, attempt: 1 },
        { kind: "event", id: "never-stored", seq: 99 },
      ]),
    );
    expect(lost).toHaveLength(2);
  });

  it("find a task stuck past its deadline, and an interrupted auction that never closed", async () => {
    const { task, sql, inspect } = await sound();
    const auctions = await inspect((i) => i.openAuctions());
    expect(auctions).toMatchObject([{ task_id: task, attempt: 1, bids: [{ bid_sats: 5 }] }]);
    await sql("UPDATE tasks SET auction_closes_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", task);
    expect((await inspect((i) => i.checkNothingStuck(30_000, 0))).join()).toContain(
      "bidding past its deadline",
    );
    expect((await inspect((i) => i.checkClosed(auctions[0]!))).join()).toContain("never closed");
  });

  it.runIf(engine.name === "postgres")(
    "find a seq head that disagrees with the newest event (PostgreSQL numbers events from it)",
    async () => {
      const { sql, inspect } = await sound();
      await sql("UPDATE event_log_head SET last_seq = last_seq + 1 WHERE id = 1");
      expect((await inspect((i) => i.checkStore())).join()).toMatch(
        /event_log_head stands at \d+ but the newest event is \d+/,
      );
    },
  );
});
