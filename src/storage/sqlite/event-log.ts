/**
 * The event log store: one SQLite connection, its prepared statements, group-committed
 * appends, transactions that other stores (the coordinator's state tables) share, the queries,
 * subscriptions fired after commit, and chunked pruning.
 */
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import Database from "better-sqlite3";
import { SwarmError } from "../../errors.js";
import { getLogger, type Logger } from "../../logger.js";
import {
  DAY_MS,
  firstWholeHour,
  hourOf,
  newestFirst,
  resizeChunk,
  retentionRefusal,
  rowToEvent,
  summaryOf,
  SUMMARY_SCAN_MINUTES,
  toPage,
  windowStart,
  type EventRow,
  type TypeCount,
} from "../../event-log/rows.js";
import { Subscribers } from "../../event-log/subscribers.js";
import type { EventLogPort, PruneOptions, StorageFailure } from "../port.js";
import { BackgroundCheckpointer } from "./checkpointer.js";
import { isInMemory, openDatabase, type SqliteDatabase } from "./database.js";
import { buildListQuery, buildSearchPlan, SQL, type BuiltQuery } from "./queries.js";
import { attachSearchIndex, SearchWorker } from "./search-index.js";
import type {
  EventFilter,
  EventInput,
  EventListener,
  EventPage,
  EventSummary,
  HourlyCount,
  MinuteCount,
  PruneReport,
  StoredEvent,
  SubscriptionFilter,
} from "../../event-log/types.js";
import {
  checkIdentifier,
  checkRange,
  checkTimestamp,
  EVENT_LIMITS,
  normalizeFilter,
  prepareEvent,
  type PreparedEvent,
} from "../../event-log/validate.js";

export interface EventLogOptions {
  /** SQLite file, created with its folder on first use; `:memory:` for a throwaway log. */
  path: string;
  /** NORMAL (default): a returned write survives a process crash. FULL: it survives power loss too. */
  synchronous?: "FULL" | "NORMAL";
  logger?: Logger;
  /** The clock that stamps events and sets prune cutoffs; tests pass a fake one. */
  clock?: () => Date;
  /** Most events committed in one group transaction; more wait for the next turn of the event loop. */
  maxBatchEvents?: number;
  /**
   * Checkpoint the WAL from a worker thread every this many ms (default 200) instead of inside
   * commits on the event loop; 0 leaves checkpoints to SQLite. Files only, not `:memory:`.
   */
  checkpointIntervalMs?: number;
  /**
   * Keep a trigram index for text searches in `<path>-search`, built on a worker thread
   * (default true for files; `:memory:` logs search by scanning).
   */
  searchIndex?: boolean;
}

export type { PruneOptions };

/** How `deleteInChunks` sizes its chunks. */
export interface ChunkOptions {
  /** How long one chunk may hold the event loop; the next is resized from how long the last took. Default 10 ms. */
  targetChunkMs?: number;
  /**
   * The first chunk's size and the smallest one, in rows. Defaults suit event rows (500, 50); a
   * row that takes others with it (a task, its bids and keys) starts smaller.
   */
  initialChunk?: number;
  minChunk?: number;
}

/** Handed to the body of `transaction()`: appends that commit or roll back with everything else. */
export interface EventLogTransaction {
  append(input: EventInput): StoredEvent;
  appendMany(inputs: readonly EventInput[]): StoredEvent[];
}

/**
 * A synchronous summary over days scans the time index instead when the rollup is this far
 * behind (a log whose rollup never ran), since the events past the rollup are read from the table.
 */
interface QueuedWrite {
  events: PreparedEvent[];
  resolve: (stored: StoredEvent[]) => void;
  reject: (error: unknown) => void;
}

const MAX_UNROLLED_FOR_SUMMARY = 100_000;
const PRUNE_CHUNK_BOUNDS = { initial: 500, min: 50, max: 50_000 };
const VACUUM_STEP_BOUNDS = { initial: 256, min: 16, max: 100_000 };
/** A WAL this many frames long (~8 MiB at 2 KiB pages) that checkpoints cannot finish makes writers wait for a drain. */
const WAL_PRESSURE_FRAMES = 4000;
/** Drain the WAL every this many prune or vacuum steps, so that it never grows past a few MiB. */
const PRUNE_CHUNKS_PER_CHECKPOINT = 4;

/** SQLite failures that are about the storage, not the caller's input, become one typed error. */
function toStorageError(error: unknown): unknown {
  if (!(error instanceof Database.SqliteError)) return error;
  if (error.code === "SQLITE_CONSTRAINT_UNIQUE" && error.message.includes("event_log.id")) {
    return new SwarmError(
      "DUPLICATE_EVENT_ID",
      "an event with this id is already in the log",
      { field: "id" },
      { cause: error },
    );
  }
  return new SwarmError(
    "STORAGE_UNAVAILABLE",
    `the event log could not be written (${error.code}); nothing from this write was kept`,
    { sqlite_code: error.code },
    { cause: error },
  );
}

export class SqliteEventLog implements EventLogPort {
  readonly engine = "sqlite" as const;
  readonly path: string;
  /** The shared connection: other stores put their state tables in the same transactions. */
  readonly db: SqliteDatabase;
  private readonly logger: Logger;
  /** The clock that stamps events; the dashboard reads "now" from it too, so tests can move it. */
  readonly clock: () => Date;
  private readonly maxBatchEvents: number;
  private readonly statements;
  private readonly listStatements = new Map<string, Database.Statement>();
  private readonly runInSqliteTransaction: (body: () => unknown) => unknown;
  private readonly subscribers: Subscribers;
  private readonly transactionHandle: EventLogTransaction;
  private readonly checkpointer: BackgroundCheckpointer | undefined;
  private readonly searchWorker: SearchWorker | undefined;
  /** Set by a write the storage refused (disk full, read-only, I/O error); cleared by the next commit. */
  private failingSince: StorageFailure | undefined;

  /** Events appended inside the open transaction, announced once the outermost one commits. */
  private uncommitted: StoredEvent[] = [];
  private queue: QueuedWrite[] = [];
  private flushScheduled = false;
  private draining = false;
  private pruning: Promise<unknown> = Promise.resolve();
  private closed = false;
  private committedTransactions = 0;
  private committedEvents = 0;

  constructor(options: EventLogOptions) {
    this.path = options.path;
    this.logger = (options.logger ?? getLogger()).child({ component: "event-log" });
    this.subscribers = new Subscribers(this.logger);
    this.clock = options.clock ?? (() => new Date());
    this.maxBatchEvents = options.maxBatchEvents ?? 5000;
    this.db = openDatabase({ path: options.path, synchronous: options.synchronous ?? "NORMAL" });
    const db = this.db;
    this.statements = {
      insert: db.prepare(SQL.insert),
      rollUpRange: db.prepare<[number, number]>(SQL.rollUpRange),
      rolledUpTo: db.prepare<[], number>(SQL.rolledUpTo).pluck(),
      setRolledUpTo: db.prepare<[number]>(SQL.setRolledUpTo),
      liveHourly: db.prepare<[number], HourlyCount>(SQL.liveHourly),
      byId: db.prepare<[string], EventRow>(SQL.byId),
      taskPage: db.prepare<[string, number, number], EventRow>(SQL.taskPage),
      agentPage: db.prepare<[string, number, number], EventRow>(SQL.agentPage),
      recent: db.prepare<[string, number], EventRow>(SQL.recent),
      summary: db.prepare<[string], TypeCount>(SQL.summary),
      summaryRolledHours: db.prepare<[string], TypeCount>(SQL.summaryRolledHours),
      summaryPartialHour: db.prepare<[string, string], TypeCount>(SQL.summaryPartialHour),
      summaryUnrolled: db.prepare<[string], TypeCount>(SQL.summaryUnrolled),
      unrolled: db.prepare<[], number>(SQL.unrolled).pluck(),
      minutely: db.prepare<[string], MinuteCount>(SQL.minutely),
      hourly: db.prepare<[string, string], HourlyCount>(SQL.hourly),
      pruneChunk: db.prepare<[string, number, number]>(SQL.pruneChunk),
      latestSeq: db.prepare<[], { seq: number | null }>(SQL.latestSeq),
      oldestSeq: db.prepare<[], { seq: number | null }>(SQL.oldestSeq),
    };
    this.runInSqliteTransaction = db.transaction((body: () => unknown) => body());
    const checkpointIntervalMs = options.checkpointIntervalMs ?? 200;
    if (checkpointIntervalMs > 0 && !isInMemory(options.path)) {
      // Backstop only: if the worker falls behind, SQLite still checkpoints past ~20 MiB of WAL.
      db.pragma("wal_autocheckpoint = 10000");
      this.checkpointer = new BackgroundCheckpointer({
        path: options.path,
        intervalMs: checkpointIntervalMs,
        logger: this.logger,
      });
    }
    if (options.searchIndex !== false && !isInMemory(options.path)) {
      let indexedTo: number;
      try {
        ({ indexedTo } = attachSearchIndex(db, options.path));
      } catch (error) {
        db.close();
        this.checkpointer?.stop();
        throw error;
      }
      this.searchWorker = new SearchWorker({ logPath: options.path, logger: this.logger, indexedTo });
    }
    this.transactionHandle = {
      append: (input) => this.insertPrepared(prepareEvent(input, this.clock())),
      appendMany: (inputs) => {
        const now = this.clock();
        const prepared = inputs.map((input, index) => prepareEvent(input, now, `[${index}].`));
        return prepared.map((event) => this.insertPrepared(event));
      },
    };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** What the background checkpointer has done; undefined for `:memory:` or when disabled. */
  checkpointStats(): ReturnType<BackgroundCheckpointer["stats"]> | undefined {
    return this.checkpointer?.stats();
  }

  /** Counters since open: how well group commit is batching, and what metrics export. */
  writeStats(): { transactions: number; events: number; queued: number } {
    return {
      transactions: this.committedTransactions,
      events: this.committedEvents,
      queued: this.queue.reduce((sum, write) => sum + write.events.length, 0),
    };
  }

  // ---------------------------------------------------------------- writes

  /**
   * Append one event. Calls made in the same turn of the event loop share one transaction
   * (group commit); each promise resolves only after its transaction has committed.
   */
  logEvent(input: EventInput): Promise<StoredEvent> {
    return this.enqueue(() => [prepareEvent(input, this.clock())]).then((stored) => stored[0] as StoredEvent);
  }

  /** Append several events atomically: all are stored, in order, or none is. */
  logEvents(inputs: readonly EventInput[]): Promise<StoredEvent[]> {
    return this.enqueue(() => {
      if (!Array.isArray(inputs)) {
        throw new SwarmError("INVALID_EVENT", "events: must be an array", { field: "events" });
      }
      const now = this.clock();
      return inputs.map((input, index) => prepareEvent(input, now, `[${index}].`));
    });
  }

  private enqueue(prepare: () => PreparedEvent[]): Promise<StoredEvent[]> {
    return new Promise((resolve, reject) => {
      this.assertOpen();
      const events = prepare();
      this.queue.push({ events, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flushQueue());
      }
    });
  }

  /** Write what is queued, up to `maxBatchEvents` per transaction, yielding between batches. */
  private flushQueue(): void {
    this.flushScheduled = false;
    if (this.closed || this.draining) return;
    if (this.checkpointer?.isBehind(WAL_PRESSURE_FRAMES)) {
      // Back-pressure without blocking: let the worker catch up while writes queue (and so
      // batch better), then carry on.
      this.draining = true;
      void this.drainWal().finally(() => {
        this.draining = false;
        if (this.queue.length > 0) this.flushQueue();
      });
      return;
    }
    const batch = this.takeBatch();
    if (this.queue.length > 0) {
      this.flushScheduled = true;
      setImmediate(() => this.flushQueue());
    }
    this.writeBatch(batch);
  }

  /** The oldest queued writes, up to `maxBatchEvents` events (but at least one write). */
  private takeBatch(): QueuedWrite[] {
    let events = 0;
    let take = 0;
    while (take < this.queue.length) {
      const size = this.queue[take]?.events.length ?? 0;
      if (take > 0 && events + size > this.maxBatchEvents) break;
      events += size;
      take += 1;
    }
    return this.queue.splice(0, take);
  }

  private writeBatch(batch: QueuedWrite[]): void {
    if (batch.length === 0) return;
    let results: StoredEvent[][];
    try {
      results = this.transaction(() =>
        batch.map((write) => write.events.map((event) => this.insertPrepared(event))),
      );
    } catch (error) {
      if (batch.length === 1) {
        batch[0]?.reject(error);
        return;
      }
      // One caller's bad write (a duplicate id) must not sink the others that shared its batch.
      for (const write of batch) this.writeBatch([write]);
      return;
    }
    batch.forEach((write, index) => write.resolve(results[index] ?? []));
  }

  /**
   * Run `body` in one SQLite transaction together with the events it appends. Nested calls
   * become savepoints. Subscribers hear of the events only after the outermost commit, and
   * never of events whose transaction rolled back. The body must be synchronous.
   */
  /** Whether writes are failing: the SQLite code of the first failure since the last commit, and when. */
  get storageFailure(): StorageFailure | undefined {
    return this.failingSince;
  }

  transaction<T>(body: (tx: EventLogTransaction) => T): T {
    this.assertOpen();
    const outermost = !this.db.inTransaction;
    const mark = this.uncommitted.length;
    let result: T;
    try {
      result = this.runInSqliteTransaction(() => body(this.transactionHandle)) as T;
    } catch (error) {
      this.uncommitted.length = mark;
      const failure = toStorageError(error);
      if (failure instanceof SwarmError && failure.code === "STORAGE_UNAVAILABLE") {
        this.failingSince ??= {
          code: String(failure.details?.sqlite_code),
          since: this.clock().toISOString(),
        };
      }
      throw failure;
    }
    if (outermost) {
      const committed = this.uncommitted;
      // Only a commit that stored something proves the storage writable again (an empty one
      // commits even on a read-only file).
      if (committed.length > 0) this.failingSince = undefined;
      this.uncommitted = [];
      this.committedTransactions += 1;
      this.committedEvents += committed.length;
      this.subscribers.announce(committed);
    }
    return result;
  }

  private insertPrepared(event: PreparedEvent): StoredEvent {
    if (!this.db.inTransaction) {
      throw new Error("append() is only valid inside the body of eventLog.transaction()");
    }
    const info = this.statements.insert.run(
      event.id,
      event.event_type,
      event.source,
      event.task_id,
      event.agent_id,
      event.dataJson,
      event.timestamp,
    );
    const stored: StoredEvent = {
      seq: Number(info.lastInsertRowid),
      id: event.id,
      event_type: event.event_type,
      source: event.source,
      task_id: event.task_id,
      agent_id: event.agent_id,
      data: event.data,
      timestamp: event.timestamp,
    };
    this.uncommitted.push(stored);
    return stored;
  }

  // ---------------------------------------------------------------- subscriptions

  /** Hear of every committed event (or those matching `filter`), in seq order. Returns the unsubscribe. */
  subscribe(listener: EventListener, filter?: SubscriptionFilter): () => void {
    return this.subscribers.add(listener, filter);
  }

  // ---------------------------------------------------------------- reads

  getEvent(id: string): StoredEvent | null {
    this.assertOpen();
    if (typeof id !== "string") return null;
    const row = this.statements.byId.get(id);
    return row === undefined ? null : rowToEvent(row);
  }

  /** A task's whole timeline, oldest first, read in pages underneath so it is never cut short. */
  getTaskEvents(taskId: string): StoredEvent[] {
    return this.readAll(this.statements.taskPage, checkIdentifier("INVALID_FILTER", "task_id", taskId));
  }

  /** Everything an agent did or had done to it, oldest first. */
  getAgentEvents(agentId: string): StoredEvent[] {
    return this.readAll(this.statements.agentPage, checkIdentifier("INVALID_FILTER", "agent_id", agentId));
  }

  private readAll(page: Database.Statement<[string, number, number], EventRow>, key: string): StoredEvent[] {
    this.assertOpen();
    const events: StoredEvent[] = [];
    let afterSeq = 0;
    for (;;) {
      const rows = page.all(key, afterSeq, EVENT_LIMITS.maxPageSize);
      for (const row of rows) events.push(rowToEvent(row));
      const last = rows.at(-1);
      if (last === undefined || rows.length < EVENT_LIMITS.maxPageSize) return events;
      afterSeq = last.seq;
    }
  }

  /**
   * One page of events matching every given filter. A text search on a file log goes through
   * the trigram index; see `listEventsAsync` for the form that never holds the event loop.
   */
  listEvents(filter: EventFilter = {}): EventPage {
    this.assertOpen();
    const normalized = normalizeFilter(filter);
    const plan = this.searchWorker === undefined ? undefined : buildSearchPlan(normalized);
    if (plan !== undefined) {
      const rows = this.runInSqliteTransaction(() => {
        const found: EventRow[] = [];
        for (const step of plan) {
          if (found.length >= normalized.limit) break;
          found.push(
            ...(this.statementFor(step).all(...step.params, normalized.limit - found.length) as EventRow[]),
          );
        }
        return found;
      }) as EventRow[];
      return toPage(rows, normalized.limit);
    }
    const query = buildListQuery(normalized);
    return toPage(this.statementFor(query).all(...query.params) as EventRow[], normalized.limit);
  }

  /**
   * `listEvents` for a server: a text search runs on the search worker, off the event loop
   * (common text reads long posting lists); every other filter is an index range read and
   * is answered at once. Same answers as `listEvents`.
   */
  async listEventsAsync(filter: EventFilter = {}): Promise<EventPage> {
    this.assertOpen();
    const normalized = normalizeFilter(filter);
    const worker = this.searchWorker;
    const plan = worker?.available === true ? buildSearchPlan(normalized) : undefined;
    if (worker === undefined || plan === undefined) return this.listEvents(filter);
    let rows: EventRow[];
    try {
      rows = (await worker.query(plan, normalized.limit)) as EventRow[];
    } catch (error) {
      if (this.closed) throw new SwarmError("EVENT_LOG_CLOSED", "the event log is closed");
      // The worker is gone (it logged why): answer here rather than not at all.
      this.logger.warn({ err: error }, "search on the worker failed; searching on the event loop");
      return this.listEvents(filter);
    }
    return toPage(rows, normalized.limit);
  }

  /** The newest seq the search index covers (searches scan what lies beyond); undefined without one. */
  searchIndexedThrough(): number | undefined {
    return this.searchWorker?.indexedThrough;
  }

  private statementFor(query: BuiltQuery): Database.Statement {
    let statement = this.listStatements.get(query.shape);
    if (statement === undefined) {
      statement = this.db.prepare(query.sql);
      this.listStatements.set(query.shape, statement);
    }
    return statement;
  }

  /** Events of the last `minutes`, newest first. */
  getRecentEvents(minutes = 60, limit: number = EVENT_LIMITS.defaultPageSize): StoredEvent[] {
    this.assertOpen();
    const since = this.windowStart(minutes);
    if (!Number.isInteger(limit) || limit < 1 || limit > EVENT_LIMITS.maxPageSize) {
      throw new SwarmError(
        "INVALID_FILTER",
        `limit: must be an integer from 1 to ${EVENT_LIMITS.maxPageSize}`,
        { field: "limit" },
      );
    }
    return this.statements.recent.all(since, limit).map(rowToEvent).sort(newestFirst);
  }

  /**
   * Counts by type over the last `minutes`. Over more than two hours the whole hours come from
   * the hourly rollup (which also counts events retention has since removed), so the cost does
   * not grow with the window.
   */
  getEventSummary(minutes = 60): EventSummary {
    this.assertOpen();
    const since = this.windowStart(minutes);
    const plan = this.summaryPlan(minutes, since);
    const rows = this.runInSqliteTransaction(() =>
      plan === undefined || this.statements.unrolled.get()! > MAX_UNROLLED_FOR_SUMMARY
        ? this.statements.summary.all(since)
        : plan.flatMap((step) => this.statementFor(step).all(...step.params) as TypeCount[]),
    ) as TypeCount[];
    return summaryOf(minutes, since, rows);
  }

  /** `getEventSummary` for a server: a summary over days is read on the worker, off the event loop. */
  async getEventSummaryAsync(minutes = 60): Promise<EventSummary> {
    this.assertOpen();
    const since = this.windowStart(minutes);
    const plan = this.summaryPlan(minutes, since);
    if (plan === undefined || this.searchWorker?.available !== true) return this.getEventSummary(minutes);
    try {
      return summaryOf(
        minutes,
        since,
        (await this.searchWorker.query(plan, Number.MAX_SAFE_INTEGER)) as TypeCount[],
      );
    } catch (error) {
      if (this.closed) throw new SwarmError("EVENT_LOG_CLOSED", "the event log is closed");
      this.logger.warn({ err: error }, "summary on the worker failed; reading it on the event loop");
      return this.getEventSummary(minutes);
    }
  }

  /** The rollup-backed steps of a summary over more than SUMMARY_SCAN_MINUTES; undefined below. */
  private summaryPlan(minutes: number, since: string): BuiltQuery[] | undefined {
    if (minutes <= SUMMARY_SCAN_MINUTES) return undefined;
    const wholeHoursFrom = firstWholeHour(since);
    const step = (sql: string, params: string[], shape: string): BuiltQuery => ({
      sql,
      params,
      shape,
      limited: false,
    });
    return [
      step(SQL.summaryRolledHours, [wholeHoursFrom], "summary-rolled"),
      step(SQL.summaryPartialHour, [since, wholeHoursFrom], "summary-partial"),
      step(SQL.summaryUnrolled, [since], "summary-unrolled"),
    ];
  }

  /** Counts per minute and type over the last `minutes`; `minute` is `YYYY-MM-DDTHH:MM`. */
  getMinuteCounts(minutes = 60): MinuteCount[] {
    this.assertOpen();
    return this.statements.minutely.all(this.windowStart(minutes));
  }

  /**
   * Counts per hour and type: the rollup, which outlives pruning, plus the events not yet
   * folded into it. For charts over months.
   */
  getHourlyCounts(given: { since?: string | Date; until?: string | Date } = {}): HourlyCount[] {
    this.assertOpen();
    const range = checkRange(given);
    const since =
      range.since === undefined ? "0000" : hourOf(checkTimestamp("INVALID_FILTER", "since", range.since));
    const until = range.until === undefined ? "9999" : checkTimestamp("INVALID_FILTER", "until", range.until);
    // One read transaction, so the rollup and the live count see the same watermark.
    const rows = this.runInSqliteTransaction(() => {
      const totals = new Map<string, HourlyCount>();
      const add = (row: HourlyCount) => {
        if (row.hour < since || row.hour >= until) return;
        const key = `${row.hour}|${row.event_type}`;
        const seen = totals.get(key);
        if (seen === undefined) totals.set(key, { ...row });
        else seen.count += row.count;
      };
      this.statements.hourly.all(since, until).forEach(add);
      this.statements.liveHourly.all(this.statements.rolledUpTo.get() ?? 0).forEach(add);
      return [...totals.values()];
    }) as HourlyCount[];
    return rows.sort((a, b) =>
      a.hour === b.hour ? (a.event_type < b.event_type ? -1 : 1) : a.hour < b.hour ? -1 : 1,
    );
  }

  /**
   * Fold every event not yet counted into the hourly rollup, a chunk of seqs per transaction so
   * that a first rollup of a large log never holds the event loop for long. Resolves to the
   * seq it reached.
   */
  async rollUp(chunkRows = 20_000): Promise<number> {
    for (;;) {
      this.assertOpen();
      let step: { to: number; done: boolean };
      try {
        step = this.runInSqliteTransaction(() => {
          // Read inside the write transaction: every seq up to `latest` is committed by now.
          const from = this.statements.rolledUpTo.get() ?? 0;
          const to = Math.min(from + chunkRows, this.statements.latestSeq.get()?.seq ?? 0);
          if (to <= from) return { to: from, done: true };
          this.statements.rollUpRange.run(from, to);
          this.statements.setRolledUpTo.run(to);
          return { to, done: false };
        }) as { to: number; done: boolean };
      } catch (error) {
        throw toStorageError(error);
      }
      if (step.done) return step.to;
      await yieldToEventLoop();
    }
  }

  /** The newest seq, or 0 for an empty log: where a live reader starts. */
  latestSeq(): number {
    this.assertOpen();
    return this.statements.latestSeq.get()?.seq ?? 0;
  }

  /** The oldest seq retention kept, or null for an empty log: a resume from before it has a gap. */
  oldestSeq(): number | null {
    this.assertOpen();
    return this.statements.oldestSeq.get()?.seq ?? null;
  }

  private windowStart(minutes: number): string {
    return windowStart(this.clock(), minutes);
  }

  // ---------------------------------------------------------------- retention

  /** Delete events older than `olderThanDays`; resolves to how many were deleted. */
  async pruneEvents(olderThanDays: number): Promise<number> {
    return (await this.prune({ olderThanDays })).deleted;
  }

  /**
   * Delete old events in chunks sized to hold the event loop for about `targetChunkMs` each,
   * yielding between them, then hand the freed pages back to the file system the same way.
   * Runs one at a time; a second call waits for the first.
   */
  prune(options: PruneOptions): Promise<PruneReport> {
    const { olderThanDays } = options;
    const refusal = retentionRefusal(olderThanDays);
    if (refusal !== undefined) return Promise.reject(refusal);
    const run = this.pruning.then(() => this.runPrune(olderThanDays, options.targetChunkMs ?? 10));
    this.pruning = run.catch(() => undefined);
    return run;
  }

  private async runPrune(olderThanDays: number, targetChunkMs: number): Promise<PruneReport> {
    this.assertOpen();
    const started = performance.now();
    const cutoff = new Date(this.clock().getTime() - olderThanDays * DAY_MS).toISOString();
    const countedUpTo = await this.rollUp();
    const {
      rows: deleted,
      chunks,
      longest_ms,
    } = await this.deleteInChunks(
      (limit) => {
        try {
          return this.statements.pruneChunk.run(cutoff, countedUpTo, limit).changes;
        } catch (error) {
          throw toStorageError(error);
        }
      },
      { targetChunkMs },
    );
    const freed = this.closed ? { pages: 0, longest: 0 } : await this.releaseFreePages(targetChunkMs);
    const report: PruneReport = {
      cutoff,
      deleted,
      chunks,
      longest_delete_ms: longest_ms,
      longest_vacuum_ms: Math.round(freed.longest * 100) / 100,
      freed_pages: freed.pages,
      duration_ms: Math.round(performance.now() - started),
    };
    this.logger.debug(report, "prune finished");
    return report;
  }

  /**
   * Delete in chunks that each hold the event loop for about `targetChunkMs`: `deleteChunk(limit)`
   * goes through at most `limit` rows, committing what it deletes itself, and says how many it
   * went through (deleted or passed over: what its time grows with). Chunks are
   * resized from how long the last one took, with a yield between them and a WAL drain every few,
   * until one comes back short or the log closes. The event prune runs this way, and so does the
   * coordinator's retention of finished work (its tables share this connection).
   */
  async deleteInChunks(
    deleteChunk: (limit: number) => number,
    options: ChunkOptions = {},
  ): Promise<{ rows: number; chunks: number; longest_ms: number }> {
    const targetChunkMs = options.targetChunkMs ?? 10;
    const bounds = {
      min: options.minChunk ?? PRUNE_CHUNK_BOUNDS.min,
      max: PRUNE_CHUNK_BOUNDS.max,
    };
    let rows = 0;
    let chunks = 0;
    let longest = 0;
    let chunkSize = options.initialChunk ?? PRUNE_CHUNK_BOUNDS.initial;
    for (;;) {
      if (this.closed) break;
      const chunkStarted = performance.now();
      const changes = deleteChunk(chunkSize);
      const elapsed = performance.now() - chunkStarted;
      longest = Math.max(longest, elapsed);
      rows += changes;
      chunks += 1;
      if (changes < chunkSize) break;
      chunkSize = resizeChunk(chunkSize, elapsed, targetChunkMs, bounds);
      if (chunks % PRUNE_CHUNKS_PER_CHECKPOINT === 0) await this.drainWal();
      else await yieldToEventLoop();
    }
    return { rows, chunks, longest_ms: Math.round(longest * 100) / 100 };
  }

  /** incremental_vacuum in steps, then a checkpoint, so the file on disk actually shrinks. */
  private async releaseFreePages(targetMs: number): Promise<{ pages: number; longest: number }> {
    let pages = 0;
    let longest = 0;
    let step = VACUUM_STEP_BOUNDS.initial;
    for (let steps = 1; ; steps += 1) {
      if (this.closed) return { pages, longest };
      const free = this.db.pragma("freelist_count", { simple: true }) as number;
      if (free === 0) break;
      const started = performance.now();
      this.db.pragma(`incremental_vacuum(${Math.min(step, free)})`);
      const elapsed = performance.now() - started;
      longest = Math.max(longest, elapsed);
      pages += Math.min(step, free);
      step = resizeChunk(step, elapsed, targetMs, VACUUM_STEP_BOUNDS);
      if (steps % PRUNE_CHUNKS_PER_CHECKPOINT === 0) await this.drainWal();
      else await yieldToEventLoop();
    }
    // The file shrinks when a checkpoint copies the vacuumed pages back.
    await this.drainWal();
    return { pages, longest };
  }

  /**
   * Checkpoint the WAL on the worker while this side waits without writing. A writer that never
   * pauses (a long prune) would otherwise outrun the periodic checkpoints until SQLite's
   * backstop checkpoint stalls a commit on the event loop. A PASSIVE checkpoint stops at busy
   * readers, so try a few times.
   */
  private async drainWal(): Promise<void> {
    if (this.checkpointer === undefined) {
      if (!isInMemory(this.path)) this.db.pragma("wal_checkpoint(PASSIVE)");
      return;
    }
    for (let attempt = 0; attempt < 5 && !this.closed; attempt += 1) {
      const result = await this.checkpointer.checkpoint().catch(() => undefined);
      if (result === undefined || result.checkpointed >= result.log) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  // ---------------------------------------------------------------- lifecycle

  /** Write whatever is queued, then close the connection. Later calls fail with EVENT_LOG_CLOSED. */
  close(): void {
    if (this.closed) return;
    this.draining = false;
    while (this.queue.length > 0) this.writeBatch(this.takeBatch());
    this.closed = true;
    this.subscribers.clear();
    this.checkpointer?.stop();
    this.searchWorker?.stop();
    try {
      this.db.pragma("optimize");
    } catch (error) {
      this.logger.warn({ err: error }, "PRAGMA optimize failed at close");
    }
    this.db.close();
  }

  /**
   * Resolves once the background threads (WAL checkpointer, search indexer) have closed their
   * connections too, after `close()`: wait for it before moving or deleting the files.
   */
  async whenClosed(): Promise<void> {
    await Promise.all([this.checkpointer?.exited, this.searchWorker?.exited]);
  }

  private assertOpen(): void {
    if (this.closed) throw new SwarmError("EVENT_LOG_CLOSED", "the event log is closed");
  }
}

export function createEventLog(options: EventLogOptions): SqliteEventLog {
  return new SqliteEventLog(options);
}
