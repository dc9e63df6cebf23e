/**
 * The SQL behind every read of the event log, built in one place so that the query-plan test
 * can run EXPLAIN QUERY PLAN over exactly what the log executes.
 */
import type { NormalizedFilter } from "../../event-log/validate.js";
import {
  EVENT_COLUMNS,
  filterConditions,
  likePattern,
  LIKE_DATA,
  MAX_SEQ,
  spelledInJson,
  type BuiltQuery,
} from "../event-queries.js";

export { buildListQuery, EVENT_COLUMNS, eventMatches, MAX_SEQ, type BuiltQuery } from "../event-queries.js";

/** The schema the search index is attached under, on every connection that reads it. */
export const SEARCH_SCHEMA = "search";

/** The newest seq the search index holds: events after it are searched by a scan. */
const INDEXED_TO = `(SELECT indexed_to FROM ${SEARCH_SCHEMA}.search_state WHERE id = 1)`;

/**
 * The trigrams of the text, each quoted, as an FTS5 query that every event whose data holds
 * the text matches (the index has no positions, so it can only say that all of them occur;
 * the LIKE on the row then decides exactly, with the same semantics as an unindexed search).
 * Undefined for text shorter than a trigram, which the index cannot help with.
 */
export function trigramQuery(text: string): string | undefined {
  const characters = Array.from(spelledInJson(text));
  if (characters.length < 3) return undefined;
  const trigrams = new Set<string>();
  for (let i = 0; i + 3 <= characters.length; i += 1) trigrams.add(characters.slice(i, i + 3).join(""));
  return [...trigrams].map((trigram) => `"${trigram.replace(/"/g, '""')}"`).join(" ");
}

/**
 * A text search as steps run in order in one read transaction, each taking at most the rows
 * still wanted (its last parameter, left off here): the indexed part of the log through the
 * trigram index, and the tail the indexer has not reached yet by a scan of just that tail.
 * Each step returns rows in the filter's order, so the steps concatenate in that order too.
 * Undefined when the index cannot help (text shorter than a trigram, or one task's timeline,
 * which its own index bounds) and the plain query is the better plan.
 */
export function buildSearchPlan(filter: NormalizedFilter): BuiltQuery[] | undefined {
  if (filter.text === undefined || filter.task_id !== undefined) return undefined;
  const match = trigramQuery(filter.text);
  if (match === undefined) return undefined;
  const like = likePattern(filter.text);
  const after = filter.after_seq ?? 0;
  const before = filter.before_seq ?? MAX_SEQ;
  const direction = filter.order === "desc" ? "DESC" : "ASC";
  const outer = filterConditions(filter, "e.");
  // CROSS JOIN keeps the index as the outer loop: driving from an event_log index and probing
  // the text index per row is far slower for any text worth indexing.
  const indexed: BuiltQuery = {
    shape: `search-indexed|${outer.shape.join(",")}|${direction}`,
    sql:
      `SELECT ${EVENT_COLUMNS.split(", ")
        .map((column) => `e.${column}`)
        .join(", ")} ` +
      `FROM ${SEARCH_SCHEMA}.event_text AS f CROSS JOIN event_log AS e ON e.seq = f.rowid ` +
      `WHERE event_text MATCH ? AND f.rowid > ? AND f.rowid < ? AND f.rowid <= ${INDEXED_TO} AND ${[
        ...outer.where,
        LIKE_DATA("e."),
      ].join(" AND ")} ORDER BY f.rowid ${direction} LIMIT ?`,
    params: [match, after, before, ...outer.params, like],
  };
  const plain = filterConditions(filter);
  const tail: BuiltQuery = {
    shape: `search-tail|${plain.shape.join(",")}|${direction}`,
    sql:
      `SELECT ${EVENT_COLUMNS} FROM event_log WHERE ${[...plain.where, LIKE_DATA("")].join(" AND ")} ` +
      `AND seq > max(?, ${INDEXED_TO}) AND seq < ? ORDER BY seq ${direction} LIMIT ?`,
    params: [...plain.params, like, after, before],
  };
  return direction === "ASC" ? [indexed, tail] : [tail, indexed];
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
  // A summary over days: whole hours from the rollup, the first partial hour and the events the
  // rollup has not reached from the log, each bounded (hours × types; one hour; the rollup's lag)
  // where a scan of the window would read every event in it. One read transaction, so all three
  // see the same watermark.
  summaryRolledHours:
    "SELECT event_type, SUM(count) AS count FROM event_counts_hourly WHERE hour >= ? GROUP BY event_type",
  summaryPartialHour:
    "SELECT event_type, COUNT(*) AS count FROM event_log INDEXED BY idx_event_log_time " +
    "WHERE timestamp >= ? AND timestamp < ? AND seq <= (SELECT rolled_up_to_seq FROM event_rollup_state WHERE id = 1) " +
    "GROUP BY event_type",
  summaryUnrolled:
    // NOT INDEXED: by seq, the rollup's short lag; the planner would rather walk a whole index to skip the GROUP BY sort.
    "SELECT event_type, COUNT(*) AS count FROM event_log NOT INDEXED " +
    "WHERE seq > (SELECT rolled_up_to_seq FROM event_rollup_state WHERE id = 1) AND timestamp >= ? GROUP BY event_type",
  /** How many events the rollup has yet to fold in. */
  unrolled:
    "SELECT COALESCE((SELECT MAX(seq) FROM event_log), 0) - rolled_up_to_seq FROM event_rollup_state WHERE id = 1",
  hourly:
    "SELECT hour, event_type, count FROM event_counts_hourly WHERE hour >= ? AND hour < ? ORDER BY hour, event_type",
  // Only rows already counted by the rollup (seq <= ?) may go.
  pruneChunk:
    "DELETE FROM event_log WHERE seq IN " +
    "(SELECT seq FROM event_log WHERE timestamp < ? AND seq <= ? ORDER BY timestamp LIMIT ?)",
  latestSeq: "SELECT MAX(seq) AS seq FROM event_log",
  oldestSeq: "SELECT MIN(seq) AS seq FROM event_log",
} as const;
