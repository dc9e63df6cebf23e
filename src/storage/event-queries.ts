/**
 * The list queries both engines run over event_log, built in one place so that both answer a
 * filter the same way (and the query-plan tests can EXPLAIN exactly what runs). Written with `?`
 * placeholders; the PostgreSQL adapter numbers them. Only the text condition differs by engine.
 */
import type { StoredEvent } from "../event-log/types.js";
import type { NormalizedFilter } from "../event-log/validate.js";

export const EVENT_COLUMNS = "seq, id, event_type, source, task_id, agent_id, data, timestamp";

/** The open upper bound of a backwards read (as large as a JavaScript number holds exactly). */
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;

export interface BuiltQuery {
  /** Identifies the SQL text, so one prepared statement serves every filter of the same shape. */
  shape: string;
  sql: string;
  params: (string | number)[];
  /** A step of a plan takes the rows still wanted as its last parameter unless this is false. */
  limited?: boolean;
}

export const lowerAscii = (text: string) => text.replace(/[A-Z]/g, (c) => c.toLowerCase());

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

interface Conditions {
  where: string[];
  params: (string | number)[];
  shape: string[];
}

/** The filter's conditions on an event_log row (`prefix` is its alias), text and seq bounds aside. */
export function filterConditions(filter: NormalizedFilter, prefix = ""): Conditions {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const shape: string[] = [];
  if (filter.types.length === 1) {
    where.push(`${prefix}event_type = ?`);
    shape.push("type");
  } else if (filter.types.length > 1) {
    where.push(`${prefix}event_type IN (${filter.types.map(() => "?").join(", ")})`);
    shape.push(`types${filter.types.length}`);
  }
  params.push(...filter.types);
  for (const column of ["source", "task_id", "agent_id"] as const) {
    const value = filter[column];
    if (value !== undefined) {
      where.push(`${prefix}${column} = ?`);
      params.push(value);
      shape.push(column);
    }
  }
  if (filter.since !== undefined) {
    where.push(`${prefix}timestamp >= ?`);
    params.push(filter.since);
    shape.push("since");
  }
  if (filter.until !== undefined) {
    where.push(`${prefix}timestamp < ?`);
    params.push(filter.until);
    shape.push("until");
  }
  return { where, params, shape };
}

/** The text as the stored JSON spells it: what both the LIKE and the index look for. */
export function spelledInJson(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}

/**
 * LIKE with the wildcards in the text escaped: the text is matched literally. The data is
 * stored as JSON, so search for the text as JSON spells it (quotes and backslashes escaped).
 */
export function likePattern(text: string): string {
  return `%${spelledInJson(text).replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export const LIKE_DATA = (prefix: string) => `${prefix}data LIKE ? ESCAPE '\\'`;

/**
 * The condition an agent's own events fail: the partial source index holds only the events
 * that meet it (migration 009). Spelled exactly as the index's WHERE, which is how SQLite
 * knows a query may use that index.
 */
const NOT_AGENTS_OWN = "(agent_id IS NULL OR source <> agent_id)";

/** How an engine says "this row's data holds the text", as conditions with `?` placeholders. */
export interface TextCondition {
  (prefix: string, text: string): { where: string[]; params: string[] };
}

/** SQLite's LIKE folds ASCII letters only, which is the product's search semantics. */
export const SQLITE_TEXT: TextCondition = (prefix, text) => ({
  where: [LIKE_DATA(prefix)],
  params: [likePattern(text)],
});

/**
 * PostgreSQL: ASCII letters folded on both sides in SQL (the trigram index is on the folded
 * text), so the answer is SQLite's whatever the database's locale: ILIKE would fold more.
 */
export const POSTGRES_TEXT: TextCondition = (prefix, text) => ({
  where: [`swarm_ascii_lower(${prefix}data) LIKE ? ESCAPE '\\'`],
  params: [lowerAscii(likePattern(text))],
});

export function buildListQuery(filter: NormalizedFilter, holdsText: TextCondition = SQLITE_TEXT): BuiltQuery {
  const { source } = filter;
  const others: NormalizedFilter = { ...filter, source: undefined };
  const direction = filter.order === "desc" ? "DESC" : "ASC";
  /** One ordered read over the filter but its source, with `extra` conditions on the row. */
  const read = (extra: string[], extraParams: string[]) => {
    const { where, params, shape } = filterConditions(others);
    where.push(...extra);
    params.push(...extraParams);
    if (filter.text !== undefined) {
      const text = holdsText("", filter.text);
      where.push(...text.where);
      params.push(...text.params);
      shape.push("text");
    }
    // Both seq bounds are always present, so a read with no other filter is a range search on
    // the primary key rather than a table scan, and the plan is the same whatever the cursor.
    where.push("seq > ?", "seq < ?");
    params.push(filter.after_seq ?? 0, filter.before_seq ?? MAX_SEQ, filter.limit);
    return {
      shape: shape.join(","),
      sql: `SELECT ${EVENT_COLUMNS} FROM event_log WHERE ${where.join(" AND ")} ORDER BY seq ${direction} LIMIT ?`,
      params,
    };
  };
  if (source === undefined) {
    const plain = read([], []);
    return { ...plain, shape: `${plain.shape}|${direction}` };
  }
  // By source, in two halves merged by seq: the agent's own events (source = agent_id) through
  // the agent index, the rest through the partial source index. Each half is a page at most.
  const own = read(["source = ?", "agent_id = ?"], [source, source]);
  const rest = read(["source = ?", NOT_AGENTS_OWN], [source]);
  return {
    shape: `source,${own.shape}|${direction}`,
    sql:
      `SELECT * FROM (${own.sql}) AS own UNION ALL SELECT * FROM (${rest.sql}) AS rest ` +
      `ORDER BY seq ${direction} LIMIT ?`,
    params: [...own.params, ...rest.params, filter.limit],
  };
}
