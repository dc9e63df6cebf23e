/**
 * The SQL behind every read of the event log, built in one place so that the query-plan test
 * can run EXPLAIN QUERY PLAN over exactly what the log executes.
 */
import type { StoredEvent } from "./types.js";
import type { NormalizedFilter } from "./validate.js";

export const EVENT_COLUMNS = "seq, id, event_type, source, task_id, agent_id, data, timestamp";

/** Largest seq SQLite can hold: the open upper bound of a backwards read. */
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;

export interface BuiltQuery {
  /** Identifies the SQL text, so one prepared statement serves every filter of the same shape. */
  shape: string;
  sql: string;
  params: (string | number)[];
}

const lowerAscii = (text: string) => text.replace(/[A-Z]/g, (c) => c.toLowerCase());

/**
 * Whether one event passes a list filter, deciding exactly as the query that buildListQuery
 * writes (LIKE is case-insensitive for ASCII only): for live views that apply a stored filter
 * to events as they commit.
 */
export function eventMatches(event: StoredEvent, filter: NormalizedFilter): boolean {
  if (filter.types.length > 0 && !filter.types.includes(event.event_type)) return false;
  if (filter.source !== undefined && filter.source !== event.source) return false;
  if (filter.task_id !== undefined && filter.task_id !== event.task_id) return false;
  if (filter.agent_id !== undefined && filter.agent_id !== event.agent_id) return false;
  if (filter.since !== undefined && event.timestamp < filter.since) return false;
  if (filter.until !== undefined && event.timestamp >= filter.until) return false;
  if (filter.after_seq !== undefined && event.seq <= filter.after_seq) return false;
  if (filter.before_seq !== undefined && event.seq >= filter.before_seq) return false;
  if (filter.text !== undefined) {
    const spelled = JSON.stringify(filter.text).slice(1, -1);
    return lowerAscii(JSON.stringify(event.data)).includes(lowerAscii(spelled));
  }
  return true;
}

export function buildListQuery(filter: NormalizedFilter): BuiltQuery {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const shape: string[] = [];
  if (filter.types.length === 1) {
    where.push("event_type = ?");
    shape.push("type");
  } else if (filter.types.length > 1) {
    where.push(`event_type IN (${filter.types.map(() => "?").join(", ")})`);
    shape.push(`types${filter.types.length}`);
  }
  params.push(...filter.types);
  for (const column of ["source", "task_id", "agent_id"] as const) {
    const value = filter[column];
    if (value !== undefined) {
      where.push(`${column} = ?`);
      params.push(value);
      shape.push(column);
    }
  }
  if (filter.text !== undefined) {
    // LIKE with the wildcards in the text escaped: the text is matched literally. The data is
    // stored as JSON, so search for the text as JSON spells it (quotes and backslashes escaped).
    where.push("data LIKE ? ESCAPE '\\'");
    const spelled = JSON.stringify(filter.text).slice(1, -1);
    params.push(`%${spelled.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    shape.push("text");
  }
  if (filter.since !== undefined) {
    where.push("timestamp >= ?");
    params.push(filter.since);
    shape.push("since");
  }
  if (filter.until !== undefined) {
    where.push("timestamp < ?");
    params.push(filter.until);
    shape.push("until");
  }
  // Both seq bounds are always present, so a read with no other filter is a range search on
  // the primary key rather than a table scan, and the plan is the same whatever the cursor.
  where.push("seq > ?", "seq < ?");
  params.push(filter.after_seq ?? 0, filter.before_seq ?? MAX_SEQ);
  const direction = filter.order === "desc" ? "DESC" : "ASC";
  params.push(filter.limit);
  return {
    shape: `${shape.join(",")}|${direction}`,
    sql: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE ${where.join(" AND ")} ORDER BY seq ${direction} LIMIT ?`,
    params,
  };
}

/** Fixed statements, prepared once per open log. */
export const SQL = {
  insert:
    "INSERT INTO event_log (id, event_type, source, task_id, agent_id, data, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
  rollUpRange:
    "INSERT INTO event_counts_hourly (hour, event_type, count) " +
    "SELECT substr(timestamp, 1, 13) || ':00:00.000Z', event_type, COUNT(*) FROM event_log " +
    "WHERE seq > ? AND seq <= ? GROUP BY 1, 2 " +
    "ON CONFLICT (hour, event_type) DO UPDATE SET count = count + excluded.count",
  rolledUpTo: "SELECT rolled_up_to_seq FROM event_rollup_state WHERE id = 1",
  setRolledUpTo: "UPDATE event_rollup_state SET rolled_up_to_seq = ? WHERE id = 1",
  /** Events not yet folded into the rollup, counted the same way. */
  liveHourly:
    "SELECT substr(timestamp, 1, 13) || ':00:00.000Z' AS hour, event_type, COUNT(*) AS count " +
    "FROM event_log WHERE seq > ? GROUP BY 1, 2",
  byId: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE id = ?`,
  taskPage: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
  agentPage: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE agent_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
  recent: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE timestamp >= ? ORDER BY timestamp DESC, seq DESC LIMIT ?`,
  // Named index: otherwise the planner may walk the whole type index to save the GROUP BY sort.
  summary:
    "SELECT event_type, COUNT(*) AS count FROM event_log INDEXED BY idx_event_log_time WHERE timestamp >= ? GROUP BY event_type",
  // Per minute and type, for the dashboard's last-hour chart: an index-only read like the summary.
  minutely:
    "SELECT substr(timestamp, 1, 16) AS minute, event_type, COUNT(*) AS count FROM event_log INDEXED BY idx_event_log_time " +
    "WHERE timestamp >= ? GROUP BY minute, event_type",
  hourly:
    "SELECT hour, event_type, count FROM event_counts_hourly WHERE hour >= ? AND hour < ? ORDER BY hour, event_type",
  // Only rows already counted by the rollup (seq <= ?) may go.
  pruneChunk:
    "DELETE FROM event_log WHERE seq IN " +
    "(SELECT seq FROM event_log WHERE timestamp < ? AND seq <= ? ORDER BY timestamp LIMIT ?)",
  latestSeq: "SELECT MAX(seq) AS seq FROM event_log",
  oldestSeq: "SELECT MIN(seq) AS seq FROM event_log",
} as const;
