/**
 * What must hold in a database the product wrote, read straight from the file with a
 * connection of our own: after a kill -9 (the server is dead) or beside the running server
 * (WAL lets a reader in). Each check returns the violations it found, as sentences.
 */
import Database from "better-sqlite3";
import type { Ack } from "./load.js";

export interface OpenAuction {
  task_id: string;
  attempt: number;
  closes_at: number;
  bids: { agent_id: string; bid_sats: number }[];
}

export class Inspector {
  private readonly db: Database.Database;

  constructor(path: string) {
    // Opening runs SQLite's recovery of the WAL a killed writer left behind.
    this.db = new Database(path, { timeout: 5000 });
  }

  close(): void {
    this.db.close();
  }

  /** The file is sound, `seq` is gapless and no event says the same thing twice. */
  checkStore(): string[] {
    const violations: string[] = [];
    const integrity = this.db.pragma("integrity_check", { simple: true });
    if (integrity !== "ok") violations.push(`integrity_check: ${String(integrity)}`);
    const { n, lo, hi } = this.db
      .prepare("SELECT COUNT(*) n, MIN(seq) lo, MAX(seq) hi FROM event_log")
      .get() as {
      n: number;
      lo: number | null;
      hi: number | null;
    };
    if (n > 0 && (hi as number) - (lo as number) + 1 !== n)
      violations.push(`seq has gaps: ${n} rows between ${lo} and ${hi}`);
    const twice: [string, string][] = [
      [
        "a task created twice",
        "SELECT task_id k, COUNT(*) c FROM event_log WHERE event_type = 'task.created' GROUP BY task_id HAVING c > 1",
      ],
      [
        "a task ended twice",
        `SELECT task_id k, COUNT(*) c FROM event_log
         WHERE event_type IN ('task.completed', 'task.failed', 'task.cancelled') GROUP BY task_id HAVING c > 1`,
      ],
      [
        "an agent joined twice",
        "SELECT agent_id k, COUNT(*) c FROM event_log WHERE event_type = 'agent.joined' GROUP BY agent_id HAVING c > 1",
      ],
      [
        "an auction round closed twice",
        `SELECT task_id || ' round ' || json_extract(data, '$.attempt') k, COUNT(*) c FROM event_log
         WHERE event_type = 'auction.closed' GROUP BY task_id, json_extract(data, '$.attempt') HAVING c > 1`,
      ],
      [
        "a tool report stored twice",
        `SELECT task_id || ' ' || event_type || ' ' || json_extract(data, '$.call_id') k, COUNT(*) c FROM event_log
         WHERE event_type LIKE 'tool.%' GROUP BY task_id, agent_id, event_type, json_extract(data, '$.call_id')
         HAVING c > 1`,
      ],
      [
        "a bid stored twice unchanged",
        `SELECT task_id || ' ' || agent_id k, COUNT(*) c FROM event_log
         WHERE event_type = 'bid.submitted' AND json_extract(data, '$.replaced_bid_sats') = json_extract(data, '$.bid_sats')
         GROUP BY task_id, agent_id HAVING c > 0`,
      ],
    ];
    for (const [what, sql] of twice) {
      for (const row of this.db.prepare(sql).all() as { k: string; c: number }[])
        violations.push(`${what}: ${row.k} (${row.c}×)`);
    }
    // The state tables and the log tell one story.
    const tasks = this.db.prepare("SELECT COUNT(*) FROM tasks").pluck().get() as number;
    const created = this.db
      .prepare("SELECT COUNT(*) FROM event_log WHERE event_type = 'task.created'")
      .pluck()
      .get() as number;
    if (tasks !== created) violations.push(`${tasks} tasks but ${created} task.created events`);
    const unexplained = this.db
      .prepare(
        `SELECT id, status FROM tasks t WHERE status IN ('completed', 'failed', 'cancelled')
         AND NOT EXISTS (SELECT 1 FROM event_log e WHERE e.task_id = t.id AND e.event_type = 'task.' || t.status)`,
      )
      .all() as { id: string; status: string }[];
    for (const task of unexplained) violations.push(`task ${task.id} is ${task.status} without its event`);
    return violations;
  }

  /** Every acknowledged request's events are stored. */
  checkAcknowledged(acked: readonly Ack[]): string[] {
    const byId = this.db.prepare("SELECT seq FROM event_log WHERE id = ?").pluck();
    const forTask = this.db
      .prepare("SELECT 1 FROM event_log WHERE task_id = ? AND event_type = ? LIMIT 1")
      .pluck();
    const forAgent = this.db
      .prepare("SELECT 1 FROM event_log WHERE agent_id = ? AND event_type = ? LIMIT 1")
      .pluck();
    const bid = this.db
      .prepare(
        `SELECT 1 FROM event_log WHERE task_id = ? AND agent_id = ? AND event_type = 'bid.submitted'
         AND json_extract(data, '$.bid_sats') = ? AND json_extract(data, '$.attempt') = ? LIMIT 1`,
      )
      .pluck();
    const lost: string[] = [];
    for (const ack of acked) {
      const kept =
        ack.kind === "event"
          ? byId.get(ack.id) === ack.seq
          : ack.kind === "task"
            ? forTask.get(ack.task_id, ack.event_type) !== undefined
            : ack.kind === "agent"
              ? forAgent.get(ack.agent_id, ack.event_type) !== undefined
              : bid.get(ack.task_id, ack.agent_id, ack.bid_sats, ack.attempt) !== undefined;
      if (!kept) lost.push(`acknowledged but not stored: ${JSON.stringify(ack)}`);
    }
    return lost;
  }

  /** The auctions open in the file, with the bids recorded for their round. */
  openAuctions(): OpenAuction[] {
    const bids = this.db.prepare("SELECT agent_id, bid_sats FROM bids WHERE task_id = ? AND attempt = ?");
    return (
      this.db.prepare("SELECT id, attempt, auction_closes_at FROM tasks WHERE status = 'bidding'").all() as {
        id: string;
        attempt: number;
        auction_closes_at: string;
      }[]
    ).map((task) => ({
      task_id: task.id,
      attempt: task.attempt,
      closes_at: Date.parse(task.auction_closes_at),
      bids: bids.all(task.id, task.attempt) as { agent_id: string; bid_sats: number }[],
    }));
  }

  /** An auction the crash interrupted was closed among (at least) the bids it had, and settled them. */
  checkClosed(auction: OpenAuction): string[] {
    const status = this.db.prepare("SELECT status FROM tasks WHERE id = ?").pluck().get(auction.task_id);
    if (status === "cancelled") return [];
    const closed = this.db
      .prepare(
        `SELECT data FROM event_log WHERE task_id = ? AND event_type = 'auction.closed'
         AND json_extract(data, '$.attempt') = ?`,
      )
      .pluck()
      .get(auction.task_id, auction.attempt) as string | undefined;
    const round = `${auction.task_id} round ${auction.attempt}`;
    if (closed === undefined) return [`interrupted auction ${round} never closed (status ${String(status)})`];
    const data = JSON.parse(closed) as {
      bids: number;
      winner: string | null;
      winning_bid_sats: number | null;
    };
    const violations: string[] = [];
    if (data.bids < auction.bids.length)
      violations.push(
        `interrupted auction ${round} closed with ${data.bids} bids, had ${auction.bids.length}`,
      );
    const settled = new Map(
      (
        this.db
          .prepare("SELECT agent_id, bid_sats, outcome FROM bids WHERE task_id = ? AND attempt = ?")
          .all(auction.task_id, auction.attempt) as {
          agent_id: string;
          bid_sats: number;
          outcome: string | null;
        }[]
      ).map((row) => [row.agent_id, row]),
    );
    for (const bid of auction.bids) {
      const row = settled.get(bid.agent_id);
      if (row === undefined || row.bid_sats !== bid.bid_sats || row.outcome === null)
        violations.push(`interrupted auction ${round}: the bid of ${bid.agent_id} was not settled as placed`);
    }
    if (data.winner !== null && settled.get(data.winner)?.bid_sats !== data.winning_bid_sats)
      violations.push(`interrupted auction ${round}: the winner's bid does not match`);
    return violations;
  }

  /**
   * No task is stuck: each open one has an auction with a deadline still ahead (give or take
   * `slackMs` for the tick), or an agent that is online or still within its timeout or grace.
   */
  checkNothingStuck(heartbeatTimeoutMs: number, slackMs: number): string[] {
    const now = Date.now();
    const agents = new Map(
      (
        this.db.prepare("SELECT id, status, last_seen, grace_until, left_at FROM agents").all() as {
          id: string;
          status: string;
          last_seen: string;
          grace_until: string | null;
          left_at: string | null;
        }[]
      ).map((agent) => [agent.id, agent]),
    );
    const violations: string[] = [];
    const open = this.db
      .prepare(
        "SELECT id, status, auction_closes_at, assigned_agent FROM tasks WHERE status IN ('bidding', 'assigned', 'running')",
      )
      .all() as {
      id: string;
      status: string;
      auction_closes_at: string | null;
      assigned_agent: string | null;
    }[];
    for (const task of open) {
      if (task.status === "bidding") {
        if (task.auction_closes_at === null || Date.parse(task.auction_closes_at) < now - slackMs)
          violations.push(`task ${task.id} is bidding past its deadline ${String(task.auction_closes_at)}`);
        continue;
      }
      const agent = task.assigned_agent === null ? undefined : agents.get(task.assigned_agent);
      const alive =
        agent !== undefined &&
        agent.left_at === null &&
        (agent.status !== "offline" ||
          (agent.grace_until !== null && Date.parse(agent.grace_until) > now - slackMs) ||
          Date.parse(agent.last_seen) + heartbeatTimeoutMs > now - slackMs);
      if (!alive) violations.push(`task ${task.id} is ${task.status} with an agent that is gone`);
    }
    return violations;
  }

  count(sql: string): number {
    return this.db.prepare(sql).pluck().get() as number;
  }
}

/** Open the file, run `use` on it, and close it again whatever happens. */
export function inspect<T>(path: string, use: (inspector: Inspector) => T): T {
  const inspector = new Inspector(path);
  try {
    return use(inspector);
  } finally {
    inspector.close();
  }
}
