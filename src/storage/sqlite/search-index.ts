/**
 * The text search index: an FTS5 trigram index of every event's data, in a file of its own
 * beside the log (`<log>-search`), built and queried on a worker thread.
 *
 * Why this shape: indexing costs about 25 µs of CPU per event, several times the cost of
 * writing the event, so maintaining the index inside the writer's transactions would cut
 * write throughput several-fold and would put that CPU on the event loop. Instead a worker
 * follows the log by seq (as the hourly rollup does) and indexes what has committed, on the
 * second core, writing only its own file so it never takes the log's write lock. A search
 * reads the index for the part of the log it covers and scans only the short tail it has not
 * reached yet, so answers are exact and current. Searches for common text still read long
 * posting lists (tens of ms), so the server runs them on the worker as well, off the event
 * loop; the module API's synchronous `listEvents` runs the same plan on its own connection.
 *
 * The file is derived data: it may be deleted while the log is closed and is rebuilt at the
 * next open; it is rebuilt too when it belongs to another log or to another schema.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../../logger.js";
import type { SqliteDatabase } from "./database.js";
import { SEARCH_SCHEMA, type BuiltQuery } from "./queries.js";

/** Bump when the index's tables or what it indexes change: older files are rebuilt. */
const SEARCH_FORMAT = 1;

/** The search index file of the log at `logPath`. */
export function searchIndexPath(logPath: string): string {
  return `${logPath}-search`;
}

const S = SEARCH_SCHEMA;

/** The statements that keep the index, run by the worker; the log's tables are `main`. */
export const SEARCH_SQL = {
  lockIndex: `UPDATE ${S}.search_state SET indexed_to = indexed_to WHERE id = 1`,
  indexedTo: `SELECT indexed_to FROM ${S}.search_state WHERE id = 1`,
  clearedBelow: `SELECT cleared_below FROM ${S}.search_state WHERE id = 1`,
  /** Where the next chunk ends: at most `?` committed events past the watermark. */
  chunkEnd: "SELECT MAX(seq) AS seq FROM (SELECT seq FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?)",
  indexRange: `INSERT INTO ${S}.event_text (rowid, data) SELECT seq, data FROM event_log WHERE seq > ? AND seq <= ?`,
  setIndexedTo: `UPDATE ${S}.search_state SET indexed_to = ? WHERE id = 1`,
  oldestSeq: "SELECT MIN(seq) AS seq FROM event_log",
  /** Pruned events leave the index in chunks (contentless_delete makes a delete by rowid cheap). */
  clearBelow:
    `DELETE FROM ${S}.event_text WHERE rowid IN ` +
    `(SELECT rowid FROM ${S}.event_text WHERE rowid < ? ORDER BY rowid LIMIT ?)`,
  setClearedBelow: `UPDATE ${S}.search_state SET cleared_below = ? WHERE id = 1`,
} as const;

const CREATE_INDEX = `
  CREATE VIRTUAL TABLE ${S}.event_text USING fts5(
    data, tokenize = 'trigram', content = '', contentless_delete = 1, detail = none);
  CREATE TABLE ${S}.search_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log_identity TEXT NOT NULL,
    indexed_to INTEGER NOT NULL,
    cleared_below INTEGER NOT NULL);
`;

/**
 * Attach the search file to the log's connection under `search`, creating or rebuilding it
 * when it is missing, of another format, of another log, or ahead of this log (restored from
 * an older copy). Runs once at open, on the log's connection; cheap unless it rebuilds, and a
 * rebuild only empties the index (the worker refills it).
 */
export function attachSearchIndex(db: SqliteDatabase, logPath: string): { indexedTo: number } {
  db.prepare(`ATTACH DATABASE ? AS ${S}`).run(searchIndexPath(logPath));
  db.pragma(`${S}.journal_mode = WAL`);
  db.pragma(`${S}.synchronous = NORMAL`);
  // The log's identity: when its first migration ran. A new log at the same path differs.
  const identity = String(
    db.prepare<[], { applied_at: string }>("SELECT applied_at FROM schema_migrations WHERE version = 1").get()
      ?.applied_at ?? "",
  );
  const latest =
    db.prepare<[], { seq: number | null }>("SELECT MAX(seq) AS seq FROM event_log").get()?.seq ?? 0;
  const format = db.pragma(`${S}.user_version`, { simple: true }) as number;
  const state =
    format === SEARCH_FORMAT
      ? db
          .prepare<[], { log_identity: string; indexed_to: number }>(
            `SELECT log_identity, indexed_to FROM ${S}.search_state WHERE id = 1`,
          )
          .get()
      : undefined;
  if (state !== undefined && state.log_identity === identity && state.indexed_to <= latest) {
    return { indexedTo: state.indexed_to };
  }
  db.transaction(() => {
    db.exec(`DROP TABLE IF EXISTS ${S}.event_text; DROP TABLE IF EXISTS ${S}.search_state;`);
    db.exec(CREATE_INDEX);
    db.prepare(`INSERT INTO ${S}.search_state VALUES (1, ?, 0, 0)`).run(identity);
    db.pragma(`${S}.user_version = ${SEARCH_FORMAT}`);
  })();
  return { indexedTo: 0 };
}

/**
 * Runs in the worker (CommonJS, as eval workers are); dependency-free. Indexes in chunks and
 * yields between them, so that a query waits at most one chunk; answers queries in order.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driverPath);
const { sql, chunkEvents, intervalMs, budgetMs } = workerData;
const db = new Database(workerData.logPath, { timeout: 5000, fileMustExist: true });
db.prepare("ATTACH DATABASE ? AS ${S}").run(workerData.searchPath);
db.pragma("cache_size = -16384");
const st = {};
for (const [name, text] of Object.entries(sql)) st[name] = db.prepare(text);
const queries = new Map();
let stopped = false;
let timer;

// Each transaction writes the index file first, so it takes that file's write lock (waiting
// for it) before it reads anything. Not BEGIN IMMEDIATE: that would lock the log's file too,
// and the log's writer would then fail at once to upgrade its own read to a write.
const indexChunk = db.transaction(() => {
  st.lockIndex.run();
  const from = st.indexedTo.get().indexed_to;
  const to = st.chunkEnd.get(from, chunkEvents).seq;
  if (to === null) return 0;
  st.indexRange.run(from, to);
  st.setIndexedTo.run(to);
  return to - from;
});
const clearChunk = db.transaction(() => {
  st.lockIndex.run();
  const oldest = st.oldestSeq.get().seq;
  const below = oldest === null ? st.indexedTo.get().indexed_to + 1 : oldest;
  if (below <= st.clearedBelow.get().cleared_below) return 0;
  const cleared = st.clearBelow.run(below, chunkEvents).changes;
  if (cleared < chunkEvents) st.setClearedBelow.run(below);
  return cleared;
});

function report(type, extra) {
  parentPort.postMessage({ type, indexedTo: st.indexedTo.get().indexed_to, ...extra });
}

function work() {
  timer = undefined;
  if (stopped) return;
  const started = Date.now();
  let indexed = 0;
  let more = false;
  try {
    for (;;) {
      const step = indexChunk();
      indexed += step;
      if (step === 0) { more = clearChunk() > 0; break; }
      if (Date.now() - started >= budgetMs) { more = true; break; }
    }
    if (indexed > 0) report("progress", { indexed });
  } catch (error) {
    report("failed", { message: String((error && error.message) || error) });
  }
  // More to do: go on after any queries that are waiting; caught up: look again later.
  timer = more ? setImmediate(work) : setTimeout(work, intervalMs);
}

function query(message) {
  try {
    const rows = db.transaction(() => {
      const found = [];
      for (const step of message.steps) {
        if (found.length >= message.limit) break;
        let statement = queries.get(step.sql);
        if (statement === undefined) { statement = db.prepare(step.sql); queries.set(step.sql, statement); }
        const args = step.limited === false ? step.params : [...step.params, message.limit - found.length];
        for (const row of statement.all(...args)) found.push(row);
      }
      return found;
    })();
    parentPort.postMessage({ type: "rows", requestId: message.requestId, rows });
  } catch (error) {
    parentPort.postMessage({ type: "error", requestId: message.requestId, message: String((error && error.message) || error) });
  }
}

parentPort.on("message", (message) => {
  if (message.type === "query") query(message);
  else if (message.type === "stop") {
    stopped = true;
    clearTimeout(timer);
    clearImmediate(timer);
    db.close();
    parentPort.close();
  }
});
timer = setImmediate(work);
`;

export interface SearchWorkerOptions {
  logPath: string;
  logger: Logger;
  /** How often a caught-up indexer looks for new events. */
  intervalMs?: number;
  /** Events per index transaction. */
  chunkEvents?: number;
  /** Where the index stood when the log opened (the worker reports only when it moves on). */
  indexedTo: number;
}

interface WorkerReply {
  type: "rows" | "error" | "progress" | "failed";
  requestId?: number;
  rows?: unknown[];
  message?: string;
  indexedTo?: number;
}

interface Waiter {
  resolve: (rows: unknown[]) => void;
  reject: (error: Error) => void;
}

/** The worker that keeps the index and answers searches; one per open log file. */
export class SearchWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Waiter>();
  private nextRequestId = 1;
  private indexedTo = 0;
  private stopped = false;
  private failure: Error | undefined;
  private readonly exitResolvers: (() => void)[] = [];
  /** Resolves once the worker has closed its connections and exited. */
  readonly exited: Promise<void> = new Promise((resolve) => this.exitResolvers.push(resolve));

  constructor({ logPath, logger, intervalMs = 200, chunkEvents = 2000, indexedTo }: SearchWorkerOptions) {
    this.indexedTo = indexedTo;
    const driverPath = createRequire(import.meta.url).resolve("better-sqlite3");
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        driverPath,
        logPath,
        searchPath: searchIndexPath(logPath),
        sql: SEARCH_SQL,
        chunkEvents,
        intervalMs,
        // Long enough to index a few thousand events, short enough that a search queued
        // behind the indexer waits little.
        budgetMs: 20,
      },
    });
    // The indexer must never keep a process alive that is otherwise done.
    this.worker.unref();
    this.worker.on("message", (message: WorkerReply) => {
      if (message.indexedTo !== undefined) this.indexedTo = message.indexedTo;
      if (message.type === "progress") return;
      if (message.type === "failed") {
        logger.warn({ reason: message.message }, "search indexing failed; it will retry");
        return;
      }
      const waiter = message.requestId === undefined ? undefined : this.pending.get(message.requestId);
      if (message.requestId !== undefined) this.pending.delete(message.requestId);
      if (message.type === "rows") waiter?.resolve(message.rows ?? []);
      else waiter?.reject(new Error(message.message));
    });
    const fail = (error: Error) => {
      if (this.stopped) return;
      this.failure = error;
      logger.error({ err: error }, "search worker stopped; searches run on the event loop until restart");
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => {
      this.exitResolvers.forEach((resolve) => resolve());
      fail(new Error(`search worker exited with code ${code}`));
    });
  }

  /** Whether the worker can take queries (false once it has failed or stopped). */
  get available(): boolean {
    return !this.stopped && this.failure === undefined;
  }

  /** The newest seq the index held at the worker's last report. */
  get indexedThrough(): number {
    return this.indexedTo;
  }

  /**
   * Run a plan's steps on the worker, in one read transaction: up to `limit` rows, in order.
   * Any read of the log can go this way, not only searches (summaries over days do).
   */
  query(steps: readonly BuiltQuery[], limit: number): Promise<unknown[]> {
    if (!this.available) return Promise.reject(this.failure ?? new Error("search worker stopped"));
    return new Promise((resolve, reject) => {
      const requestId = this.nextRequestId++;
      this.pending.set(requestId, { resolve, reject });
      this.worker.postMessage({
        type: "query",
        requestId,
        limit,
        steps: steps.map(({ sql, params, limited }) => ({ sql, params, limited })),
      });
    });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.worker.postMessage({ type: "stop" });
    for (const waiter of this.pending.values()) waiter.reject(new Error("search worker stopped"));
    this.pending.clear();
  }
}
