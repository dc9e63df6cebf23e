/**
 * The crash scenario's checks must catch what they look for: each is shown a database with
 * exactly that defect planted in it.
 */
import { describe, expect, it } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import { inspect, type Inspector } from "../../reliability/invariants.js";
import { openTestLog, silentLogger } from "../helpers/event-log.js";
import { tempDbPath } from "../helpers/temp-dir.js";

function sound() {
  const path = tempDbPath();
  const eventLog = openTestLog({ path });
  const coordinator = new Coordinator({ eventLog, logger: silentLogger, rules: { closeWhenAllBid: false } });
  const agent = coordinator.execute({ type: "RegisterAgent", name: "a" }).agent!.id;
  const task = coordinator.execute({ type: "PostTask", description: "x", auction_ms: 60_000 }).task!.id;
  coordinator.execute({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 5 });
  return { eventLog, coordinator, agent, task, inspect: <T>(use: (i: Inspector) => T) => inspect(path, use) };
}

describe("the crash scenario's invariants", () => {
  it("pass on a database the product wrote", () => {
    const { agent, task, inspect } = sound();
    expect(inspect((i) => i.checkStore())).toEqual([]);
    expect(
      inspect((i) =>
        i.checkAcknowledged([
          { kind: "task", task_id: task, event_type: "task.created" },
          { kind: "agent", agent_id: agent, event_type: "agent.joined" },
          { kind: "bid", task_id: task, agent_id: agent, bid_sats: 5, attempt: 1 },
        ]),
      ),
    ).toEqual([]);
    expect(inspect((i) => i.checkNothingStuck(30_000, 0))).toEqual([]);
  });

  it("find a gap in seq, a duplicated event and a state the log does not explain", () => {
    const { eventLog, task, inspect } = sound();
    const db = eventLog.db;
    db.prepare("DELETE FROM event_log WHERE event_type = 'task.bidding'").run();
    db.prepare(
      "INSERT INTO event_log (id, event_type, source, task_id, data, timestamp) VALUES ('dup', 'task.created', 'x', ?, '{}', '2026-01-01T00:00:00.000Z')",
    ).run(task);
    db.prepare("UPDATE tasks SET status = 'completed' WHERE id = ?").run(task);
    const found = inspect((i) => i.checkStore()).join("\n");
    expect(found).toContain("seq has gaps");
    expect(found).toContain("a task created twice");
    expect(found).toContain("is completed without its event");
  });

  it("find an acknowledged event that is missing", () => {
    const { agent, task, inspect } = sound();
    const lost = inspect((i) =>
      i.checkAcknowledged([
        { kind: "bid", task_id: task, agent_id: agent, bid_sats: 6, attempt: 1 },
        { kind: "event", id: "never-stored", seq: 99 },
      ]),
    );
    expect(lost).toHaveLength(2);
  });

  it("find a task stuck past its deadline, and an interrupted auction that never closed", () => {
    const { eventLog, task, inspect } = sound();
    const auctions = inspect((i) => i.openAuctions());
    expect(auctions).toMatchObject([{ task_id: task, attempt: 1, bids: [{ bid_sats: 5 }] }]);
    eventLog.db
      .prepare("UPDATE tasks SET auction_closes_at = '2020-01-01T00:00:00.000Z' WHERE id = ?")
      .run(task);
    expect(inspect((i) => i.checkNothingStuck(30_000, 0)).join()).toContain("bidding past its deadline");
    expect(inspect((i) => i.checkClosed(auctions[0]!)).join()).toContain("never closed");
  });
});
