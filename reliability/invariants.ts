/**
 * What must hold in a database the product wrote, read straight from the store with a
 * connection of our own: after a kill -9 (the server is dead) or beside the running server
 * (WAL lets a reader in on SQLite; MVCC on PostgreSQL). Each check returns the violations it
 * found, as sentences.
 *
 * The checks are written once, over a small connection (`?` placeholders, plain rows) with one
 * implementation per engine: better-sqlite3 on a file path, `pg` on a postgres:// URL. What the
 * engines spell differently (a field of the JSON text in `data`; the store's own soundness) is
 * the connection's to say.
 */
import Database from "better-sqlite3";
import type pg from "pg";
import { pino } from "pino";
import { isPostgresUrl, openPool } from "../src/storage/postgres/database.js";
import { numbered } from "../src/storage/postgres/queries.js";
import type { Ack } from "./load.js";

export interface OpenAuction {
  task_id: string;
  attempt: number;
  closes_at: number;
  bids: { agent_id: string; bid_sats: number }[];
}

type Row = Record<string, unknown>;

/** One engine's connection, as the checks need it. */
interface Connection {
  /** The rows of one statement with `?` placeholders; numbers as numbers on both engines. */
  all<T extends Row>(sql: string, ...params: unknown[]): Promise<T[]>;
  /** The field `field` of the JSON text in `data`, as text (for keys and grouping). */
  jsonText(field: string): string;
  /** The field `field` of the JSON text in `data`, as a number (to compare with a number). */
  jsonNumber(field: string): string;
  /** What this engine can check of the store's own soundness, beyond what the checks share. */
  checkEngine(): Promise<string[]>;
  /** A query of (status, count) rows that sum to the tasks the store counts per status. */
  readonly keptStatusCounts: string;
  close(): Promise<void>;
}

class SqliteConnection implements Connection {
  private readonly db: Database.Database;
  readonly keptStatusCounts = "SELECT status, count FROM task_status_counts";

  constructor(path: string) {
    // Opening runs SQLite's recovery of the WAL a killed writer left behind.
    this.db = new Database(path, { timeout: 5000 });
  }

  async all<T extends Row>(sql: string, ...params: unknown[]): Promise<T[]> {
    return this.db.prepare(sql).all(...params) as T[];
  }

  jsonText(field: string): string {
    return `json_extract(data, '$.${field}')`;
  }

  jsonNumber(field: string): string {
    return `json_extract(data, '$.${field}')`;
  }

  /** The file is sound: its pages, indexes and free list, as SQLite itself checks them. */
  async checkEngine(): Promise<string[]> {
    const integrity = this.db.pragma("integrity_check", { simple: true });
    return integrity === "ok" ? [] : [`integrity_check: ${String(integrity)}`];
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/**
 * One inspection reads one snapshot (a read-only REPEATABLE READ transaction): a backend of the
 * killed server may still be finishing a COMMIT it was sent before the kill, and checks that
 * compare two reads (tasks and their events, the head and the newest seq) must not see it land
 * between them. The next inspection sees it.
 */
class PostgresConnection implements Connection {
  // The totals and the deltas not yet folded into them (db/migrations/postgres/004).
  readonly keptStatusCounts =
    "SELECT status, count FROM task_status_counts UNION ALL SELECT status, delta FROM task_status_count_deltas";

  private constructor(
    private readonly pool: pg.Pool,
    private readonly client: pg.PoolClient,
  ) {}

  static async open(url: string): Promise<PostgresConnection> {
    // The product's own pool settings: bigint and numeric (seq, COUNT(*), SUM) read as numbers,
    // a statement timeout.
    const pool = openPool({ url, maxConnections: 1, logger: pino({ level: "silent" }) });
    try {
      const client = await pool.connect();
      try {
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      } catch (error) {
        client.release(true);
        throw error;
      }
      return new PostgresConnection(pool, client);
    } catch (error) {
      await pool.end();
      throw error;
    }
  }

  async all<T extends Row>(sql: string, ...params: unknown[]): Promise<T[]> {
    return (await this.client.query<T>(numbered(sql), params)).rows;
  }

  // `data` is the JSON text as written (text, not jsonb: see db/migrations/postgres/001).
  jsonText(field: string): string {
    return `(data::jsonb ->> '${field}')`;
  }

  jsonNumber(field: string): string {
    return `(data::jsonb ->> '${field}')::numeric`;
  }

  /**
   * PostgreSQL has no integrity_check, and needs none here: the scenario kills the product, a
   * client, not the database server, so the server's pages never see a crash (its own WAL
   * recovery is PostgreSQL's to test; amcheck would also need an extension installed in the
   * product's database). What a client's death can break is a transaction cut short, and
   * PostgreSQL rolls those back whole; what the product could still get wrong is a number kept
   * beside the rows in its own row: the head that hands out `seq` must stand at the newest event,
   * neither behind (the next append would take a seq already used) nor ahead (a numbering kept
   * without its events: a gap at the next append). Prunes take the oldest events only, so the
   * newest is always there while the log is not empty.
   */
  async checkEngine(): Promise<string[]> {
    const [head] = await this.all<{ last_seq: number; newest: number | null }>(
      "SELECT last_seq, (SELECT MAX(seq) FROM event_log) AS newest FROM event_log_head WHERE id = 1",
    );
    if (head === undefined) return ["event_log_head has no row"];
    if (head.newest !== null && head.last_seq !== head.newest)
      return [`event_log_head stands at ${head.last_seq} but the newest event is ${head.newest}`];
    return [];
  }

  async close(): Promise<void> {
    try {
      await this.client.query("ROLLBACK");
    } finally {
      this.client.release();
      await this.pool.end();
    }
  }
}

export class Inspector {
  private constructor(private readonly db: Connection) {}

  /** A file path opens an SQLite file; a postgres:// URL a PostgreSQL database. */
  static async open(db: string): Promise<Inspector> {
    return new Inspector(isPostgresUrl(db) ? await PostgresConnection.open(db) : new SqliteConnection(db));
  }

  close(): Promise<void> {
    return this.db.close();
  }

  /** The store is sound, `seq` is gapless and no event says the same thing twice. */
  async checkStore(): Promise<string[]> {
    const violations: string[] = await this.db.checkEngine();
    const [{ n, lo, hi }] = (await this.db.all<{ n: number; lo: number | null; hi: number | null }>(
      "SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM event_log",
    )) as [{ n: number; lo: number | null; hi: number | null }];
    if (n > 0 && (hi as number) - (lo as number) + 1 !== n)
      violations.push(`seq has gaps: ${n} rows between ${lo} and ${hi}`);
    const json = (field: string) => this.db.jsonText(field);
    // HAVING repeats COUNT(*): PostgreSQL cannot name an output column there.
    const twice: [string, string][] = [
      [
        "a task created twice",
        "SELECT task_id AS k, COUNT(*) AS c FROM event_log WHERE event_type = 'task.created' GROUP BY task_id HAVING COUNT(*) > 1",
      ],
      [
        "a task ended twice",
        `SELECT task_id AS k, COUNT(*) AS c FROM event_log
         WHERE event_type IN ('task.completed', 'task.failed', 'task.cancelled') GROUP BY task_id HAVING COUNT(*) > 1`,
      ],
      [
        "an agent joined twice",
        "SELECT agent_id AS k, COUNT(*) AS c FROM event_log WHERE event_type = 'agent.joined' GROUP BY agent_id HAVING COUNT(*) > 1",
      ],
      [
        "an auction round closed twice",
        `SELECT task_id || ' round ' || ${json("attempt")} AS k, COUNT(*) AS c FROM event_log
         WHERE event_type = 'auction.closed' GROUP BY task_id, ${json("attempt")} HAVING COUNT(*) > 1`,
      ],
      [
        "a tool report stored twice",
        `SELECT task_id || ' ' || event_type || ' ' || ${json("call_id")} AS k, COUNT(*) AS c FROM event_log
         WHERE event_type LIKE 'tool.%' GROUP BY task_id, agent_id, event_type, ${json("call_id")}
         HAVING COUNT(*) > 1`,
      ],
      [
        "a schedule fired twice for one time",
        `SELECT ${json("schedule_id")} || ' at ' || ${json("scheduled_for")} AS k, COUNT(*) AS c FROM event_log
         WHERE event_type = 'schedule.fired' GROUP BY ${json("schedule_id")}, ${json("scheduled_for")} HAVING COUNT(*) > 1`,
      ],
      [
        "a bid stored twice unchanged",
        `SELECT task_id || ' ' || agent_id AS k, COUNT(*) AS c FROM event_log
         WHERE event_type = 'bid.submitted'
         AND ${this.db.jsonNumber("replaced_bid_sats")} = ${this.db.jsonNumber("bid_sats")}
         GROUP BY task_id, agent_id HAVING COUNT(*) > 0`,
      ],
    ];
    for (const [what, sql] of twice) {
      for (const row of await this.db.all<{ k: string; c: number }>(sql))
        violations.push(`${what}: ${row.k} (${row.c}×)`);
    }
    // The state tables and the log tell one story.
    const tasks = await this.count("SELECT COUNT(*) FROM tasks");
    const created = await this.count("SELECT COUNT(*) FROM event_log WHERE event_type = 'task.created'");
    if (tasks !== created) violations.push(`${tasks} tasks but ${created} task.created events`);
    const unexplained = await this.db.all<{ id: string; status: string }>(
      `SELECT id, status FROM tasks t WHERE status IN ('completed', 'failed', 'cancelled')
       AND NOT EXISTS (SELECT 1 FROM event_log e WHERE e.task_id = t.id AND e.event_type = 'task.' || t.status)`,
    );
    for (const task of unexplained) violations.push(`task ${task.id} is ${task.status} without its event`);
    // The counts the triggers keep beside the tasks, in the same transaction, agree with them.
    const miscounted = await this.db.all<{ status: string; kept: number; actual: number }>(
      `SELECT status, SUM(kept) AS kept, SUM(actual) AS actual FROM (
         SELECT status, count AS kept, 0 AS actual FROM (${this.db.keptStatusCounts}) AS kept_counts
         UNION ALL SELECT status, 0 AS kept, COUNT(*) AS actual FROM tasks GROUP BY status
       ) AS counted GROUP BY status HAVING SUM(kept) <> SUM(actual)`,
    );
    for (const row of miscounted)
      violations.push(`task_status_counts keeps ${row.kept} ${row.status} tasks, there are ${row.actual}`);
    return violations;
  }

  /** Every acknowledged request's events are stored. */
  async checkAcknowledged(acked: readonly Ack[]): Promise<string[]> {
    const exists = async (sql: string, ...params: unknown[]) =>
      (await this.db.all(`${sql} LIMIT 1`, ...params)).length > 0;
    const lost: string[] = [];
    for (const ack of acked) {
      const kept =
        ack.kind === "event"
          ? (await this.db.all<{ seq: number }>("SELECT seq FROM event_log WHERE id = ?", ack.id))[0]?.seq ===
            ack.seq
          : ack.kind === "task"
            ? await exists(
                "SELECT 1 FROM event_log WHERE task_id = ? AND event_type = ?",
                ack.task_id,
                ack.event_type,
              )
            : ack.kind === "agent"
              ? await exists(
                  "SELECT 1 FROM event_log WHERE agent_id = ? AND event_type = ?",
                  ack.agent_id,
                  ack.event_type,
                )
              : await exists(
                  `SELECT 1 FROM event_log WHERE task_id = ? AND agent_id = ? AND event_type = 'bid.submitted'
                   AND ${this.db.jsonNumber("bid_sats")} = ? AND ${this.db.jsonNumber("attempt")} = ?`,
                  ack.task_id,
                  ack.agent_id,
                  ack.bid_sats,
                  ack.attempt,
                );
      if (!kept) lost.push(`acknowledged but not stored: ${JSON.stringify(ack)}`);
    }
    return lost;
  }

  /** The auctions open in the store, with the bids recorded for their round. */
  async openAuctions(): Promise<OpenAuction[]> {
    const open = await this.db.all<{ id: string; attempt: number; auction_closes_at: string }>(
      "SELECT id, attempt, auction_closes_at FROM tasks WHERE status = 'bidding'",
    );
    const auctions: OpenAuction[] = [];
    for (const task of open) {
      auctions.push({
        task_id: task.id,
        attempt: task.attempt,
        closes_at: Date.parse(task.auction_closes_at),
        bids: await this.db.all<{ agent_id: string; bid_sats: number }>(
          "SELECT agent_id, bid_sats FROM bids WHERE task_id = ? AND attempt = ?",
          task.id,
          task.attempt,
        ),
      });
    }
    return auctions;
  }

  /**
   * An auction the crash interrupted was closed among (at least) the bids it had, and settled
   * them; with `maxLateMs`, no later than that after its deadline (by the close event's
   * timestamp, which the database's clock gave, as it gave the deadline).
   */
  async checkClosed(auction: OpenAuction, maxLateMs?: number): Promise<string[]> {
    const [task] = await this.db.all<{ status: string }>(
      "SELECT status FROM tasks WHERE id = ?",
      auction.task_id,
    );
    const status = task?.status;
    if (status === "cancelled") return [];
    const closed = await this.closeEvent(auction);
    const round = `${auction.task_id} round ${auction.attempt}`;
    if (closed === undefined) return [`interrupted auction ${round} never closed (status ${String(status)})`];
    const data = JSON.parse(closed.data) as {
      bids: number;
      winner: string | null;
      winning_bid_sats: number | null;
    };
    const violations: string[] = [];
    const lateMs = lateness(closed, auction);
    if (maxLateMs !== undefined && lateMs > maxLateMs)
      violations.push(`interrupted auction ${round} closed ${lateMs} ms after its deadline`);
    if (data.bids < auction.bids.length)
      violations.push(
        `interrupted auction ${round} closed with ${data.bids} bids, had ${auction.bids.length}`,
      );
    const settled = new Map(
      (
        await this.db.all<{ agent_id: string; bid_sats: number; outcome: string | null }>(
          "SELECT agent_id, bid_sats, outcome FROM bids WHERE task_id = ? AND attempt = ?",
          auction.task_id,
          auction.attempt,
        )
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

  /** How long after its deadline the auction closed, ms; null while it is open. */
  async closeLateness(auction: OpenAuction): Promise<number | null> {
    const closed = await this.closeEvent(auction);
    return closed === undefined ? null : lateness(closed, auction);
  }

  private async closeEvent(auction: OpenAuction): Promise<{ data: string; timestamp: string } | undefined> {
    const [closed] = await this.db.all<{ data: string; timestamp: string }>(
      `SELECT data, timestamp FROM event_log WHERE task_id = ? AND event_type = 'auction.closed'
       AND ${this.db.jsonNumber("attempt")} = ?`,
      auction.task_id,
      auction.attempt,
    );
    return closed;
  }

  /**
   * No task is stuck: each open one has an auction with a deadline still ahead (give or take
   * `slackMs` for the tick), or an agent that is online or still within its timeout or grace.
   */
  async checkNothingStuck(heartbeatTimeoutMs: number, slackMs: number): Promise<string[]> {
    const now = Date.now();
    const agents = new Map(
      (
        await this.db.all<{
          id: string;
          status: string;
          last_seen: string;
          grace_until: string | null;
          left_at: string | null;
        }>("SELECT id, status, last_seen, grace_until, left_at FROM agents")
      ).map((agent) => [agent.id, agent]),
    );
    const violations: string[] = [];
    const open = await this.db.all<{
      id: string;
      status: string;
      auction_closes_at: string | null;
      assigned_agent: string | null;
      due_at: string | null;
    }>(
      "SELECT id, status, auction_closes_at, assigned_agent, due_at FROM tasks " +
        "WHERE status IN ('waiting', 'bidding', 'assigned', 'running')",
    );
    // Schedules fire when due: none is left behind its next firing.
    for (const schedule of await this.db.all<{ id: string; next_fire_at: string }>(
      "SELECT id, next_fire_at FROM schedules WHERE next_fire_at IS NOT NULL",
    )) {
      if (Date.parse(schedule.next_fire_at) < now - slackMs)
        violations.push(`schedule ${schedule.id} has not fired since ${schedule.next_fire_at}`);
    }
    const inGrace = (id: string | null) => {
      const agent = id === null ? undefined : agents.get(id);
      const graceUntil = agent?.grace_until ?? null;
      return graceUntil !== null && Date.parse(graceUntil) > now - slackMs;
    };
    for (const task of open) {
      // Every timed step (an award lapsing, a run timing out, a retry opening) is taken when due;
      // an award whose agent is offline since a restart waits out its grace.
      if (task.due_at !== null && Date.parse(task.due_at) < now - slackMs && !inGrace(task.assigned_agent)) {
        violations.push(`task ${task.id} is ${task.status} past its due time ${task.due_at}`);
        continue;
      }
      if (task.status === "waiting") {
        // On dependencies, every one of them still active: one that ended has settled it.
        const [row] = await this.db.all<{ waiting_on: string }>(
          "SELECT waiting_on FROM tasks WHERE id = ?",
          task.id,
        );
        for (const dependency of JSON.parse(row?.waiting_on ?? "[]") as string[]) {
          const [ended] = await this.db.all<{ status: string }>(
            "SELECT status FROM tasks WHERE id = ? AND status IN ('completed', 'failed', 'cancelled')",
            dependency,
          );
          if (ended !== undefined)
            violations.push(`task ${task.id} waits on ${dependency}, which is ${ended.status}`);
        }
        continue;
      }
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

  /** The single number a `SELECT COUNT(*) …` answers. */
  async count(sql: string, ...params: unknown[]): Promise<number> {
    const [row] = await this.db.all(sql, ...params);
    return Number(row === undefined ? Number.NaN : Object.values(row)[0]);
  }
}

function lateness(closed: { timestamp: string }, auction: OpenAuction): number {
  return Date.parse(closed.timestamp) - auction.closes_at;
}

/** Open the store (an SQLite file or a postgres:// URL), run `use` on it, and close it again whatever happens. */
export async function inspect<T>(db: string, use: (inspector: Inspector) => Promise<T>): Promise<T> {
  const inspector = await Inspector.open(db);
  try {
    return await use(inspector);
  } finally {
    await inspector.close();
  }
}
