/**
 * The PostgreSQL adapter's fixed statements, beside the list queries both engines share
 * (../event-queries.ts), which this side numbers with `numbered`.
 */
import { EVENT_COLUMNS } from "../event-queries.js";

/** `?` placeholders numbered `$1, $2, …`, for the list queries written once for both engines. */
export function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${(n += 1)}`);
}

export const PG_SQL = {
  /**
   * Number $1 events from the head row and insert them, in one statement: the UPDATE takes the
   * head's row lock, held until the transaction commits, so seqs are handed out in commit order.
   * Returns the head after numbering (the last event's seq).
   */
  append:
    "WITH head AS (UPDATE event_log_head SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq), " +
    "inserted AS (INSERT INTO event_log (seq, id, event_type, source, task_id, agent_id, data, timestamp) " +
    "SELECT head.last_seq - $1 + e.n, e.id, e.event_type, e.source, e.task_id, e.agent_id, e.data, e.timestamp " +
    "FROM head, unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) " +
    "WITH ORDINALITY AS e (id, event_type, source, task_id, agent_id, data, timestamp, n)) " +
    // A data-modifying WITH runs to completion whether or not the outer query reads it.
    "SELECT last_seq FROM head",
  /** Subscribers' feed: what committed after the last event announced, up to a bound. */
  feed: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3`,
  byId: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE id = $1`,
  taskPage: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
  agentPage: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE agent_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
  recent: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE timestamp >= $1 ORDER BY timestamp DESC, seq DESC LIMIT $2`,
  summary: "SELECT event_type, COUNT(*) AS count FROM event_log WHERE timestamp >= $1 GROUP BY event_type",
  minutely:
    "SELECT substr(timestamp, 1, 16) AS minute, event_type, COUNT(*) AS count FROM event_log " +
    "WHERE timestamp >= $1 GROUP BY 1, 2",
  summaryRolledHours:
    "SELECT event_type, SUM(count) AS count FROM event_counts_hourly WHERE hour >= $1 GROUP BY event_type",
  summaryPartialHour:
    "SELECT event_type, COUNT(*) AS count FROM event_log WHERE timestamp >= $1 AND timestamp < $2 " +
    "AND seq <= (SELECT rolled_up_to_seq FROM event_rollup_state WHERE id = 1) GROUP BY event_type",
  summaryUnrolled:
    "SELECT event_type, COUNT(*) AS count FROM event_log " +
    "WHERE seq > (SELECT rolled_up_to_seq FROM event_rollup_state WHERE id = 1) AND timestamp >= $1 GROUP BY event_type",
  unrolled:
    "SELECT COALESCE((SELECT MAX(seq) FROM event_log), 0) - rolled_up_to_seq AS unrolled FROM event_rollup_state WHERE id = 1",
  hourly:
    "SELECT hour, event_type, count FROM event_counts_hourly WHERE hour >= $1 AND hour < $2 ORDER BY hour, event_type",
  liveHourly:
    "SELECT substr(timestamp, 1, 13) || ':00:00.000Z' AS hour, event_type, COUNT(*) AS count " +
    "FROM event_log WHERE seq > $1 GROUP BY 1, 2",
  rolledUpTo: "SELECT rolled_up_to_seq AS seq FROM event_rollup_state WHERE id = 1",
  lockRollup: "SELECT rolled_up_to_seq AS seq FROM event_rollup_state WHERE id = 1 FOR UPDATE",
  rollUpRange:
    "INSERT INTO event_counts_hourly (hour, event_type, count) " +
    "SELECT substr(timestamp, 1, 13) || ':00:00.000Z', event_type, COUNT(*) FROM event_log " +
    "WHERE seq > $1 AND seq <= $2 GROUP BY 1, 2 " +
    "ON CONFLICT (hour, event_type) DO UPDATE SET count = event_counts_hourly.count + excluded.count",
  setRolledUpTo: "UPDATE event_rollup_state SET rolled_up_to_seq = $1 WHERE id = 1",
  // Only rows already counted by the rollup (seq <= $2) may go.
  pruneChunk:
    "DELETE FROM event_log WHERE seq IN " +
    "(SELECT seq FROM event_log WHERE timestamp < $1 AND seq <= $2 ORDER BY timestamp LIMIT $3)",
  latestSeq: "SELECT MAX(seq) AS seq FROM event_log",
  oldestSeq: "SELECT MIN(seq) AS seq FROM event_log",
  tablePages: "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::int) AS pages",
} as const;
