/**
 * The event log on PostgreSQL: group-committed appends numbered from the head row, the same
 * reads as on SQLite (every call returns a promise), subscribers fed in seq order, the hourly
 * rollup and chunked retention.
 *
 * Subscribers hear of events by seq, read forwards from the last one announced: after each of
 * this process's commits (with the events it has in hand when nothing came between) and on a
 * short poll for events other processes wrote. Because seq is handed out in commit order, a
 * read of `seq > last` always sees a prefix of what will ever be there, so nothing is skipped
 * and nothing is announced twice, whichever connection or process committed it.
 */
import type pg from "pg";
import { SwarmError } from "../../errors.js";
import {
  DAY_MS,
  firstWholeHour,
  hourOf,
  newestFirst,
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
import { coalesced } from "./coalesced.js";
import { Doorbell } from "./doorbell.js";
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
import { getLogger, type Logger } from "../../logger.js";
import { buildListQuery, POSTGRES_TEXT } from "../event-queries.js";
import type { EventLogPort, PruneOptions, StorageFailure } from "../port.js";
import {
  databaseNow,
  inTransaction,
  migratePostgres,
  openPool,
  postgresErrorCode,
  toPostgresStorageError,
} from "./database.js";
import { numbered, PG_SQL } from "./queries.js";

export interface PostgresEventLogOptions {
  /** `postgres://user:password@host:port/database` (or `postgresql://`). */
  url: string;
  logger?: Logger;
  /** The clock that stamps events and sets prune cutoffs; tests pass a fake one. */
  clock?: () => Date;
  /** Most events committed in one group commit. Default 5000. */
  maxBatchEvents?: number;
  /** Most connections the pool opens. Default 10. */
  maxConnections?: number;
  /** How long a request waits to connect before failing with STORAGE_UNAVAILABLE. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** How often subscribers' feed looks for events other processes wrote. Default 250 ms. */
  pollIntervalMs?: number;
  /**
   * Ring the other replicas after each commit and listen for their rings (doorbell.ts), so their
   * events reach this replica's subscribers at once rather than at the next poll. It takes one
   * more connection; a server on PostgreSQL turns it on.
   */
  doorbell?: boolean;
}

interface QueuedWrite {
  events: PreparedEvent[];
  resolve: (stored: StoredEvent[]) => void;
  reject: (error: unknown) => void;
}

/** Events an appender hands to `appendPrepared`, as the columns of one multi-row insert. */
function insertParams(events: readonly PreparedEvent[]): unknown[] {
  return [
    events.length,
    events.map((e) => e.id),
    events.map((e) => e.event_type),
    events.map((e) => e.source),
    events.map((e) => e.task_id),
    events.map((e) => e.agent_id),
    events.map((e) => e.dataJson),
    events.map((e) => e.timestamp),
  ];
}

const PRUNE_CHUNK_BOUNDS = { initial: 2000, min: 100, max: 50_000 };
/** A summary over days counts the events past the rollup from the log; this far behind, it scans the window instead. */
const MAX_UNROLLED_FOR_SUMMARY = 100_000;
const FEED_PAGE = 1000;

/**
 * Take seqs for `events` from the head row and insert them, in one statement: the head's row
 * lock is then held from numbering to commit, which is what keeps seq in commit order. Run it as
 * the last statement of a transaction (or alone, as its own). Returns the events as stored.
 */
export async function appendPrepared(
  client: pg.ClientBase | pg.Pool,
  events: readonly PreparedEvent[],
): Promise<StoredEvent[]> {
  if (events.length === 0) return [];
  // Named: prepared once per connection, not parsed and planned again for every commit.
  const result = await client.query<{ last_seq: number }>({
    name: "swarm_append_events",
    text: PG_SQL.append,
    values: insertParams(events),
  });
  const last = result.rows[0]?.last_seq;
  if (last === undefined) throw new Error("the append returned no head");
  const first = last - events.length + 1;
  return events.map((event, index) => ({
    seq: first + index,
    id: event.id,
    event_type: event.event_type,
    source: event.source,
    task_id: event.task_id,
    agent_id: event.agent_id,
    data: event.data,
    timestamp: event.timestamp,
  }));
}

export class PostgresEventLog implements EventLogPort {
  readonly engine = "postgres" as const;
  readonly clock: () => Date;
  private readonly givenClock: boolean;
  /** The pool other PostgreSQL stores share, so that their rows and these events commit together. */
  readonly pool: pg.Pool;
  private readonly logger: Logger;
  private readonly maxBatchEvents: number;
  private readonly subscribers: Subscribers;
  /** Migrating and reading the head; made again on the next call if the database was unreachable. */
  private opening: Promise<void>;
  private readonly pollTimer: NodeJS.Timeout;
  private queue: QueuedWrite[] = [];
  /** The flush in progress, if one is: one commit of appends in flight at a time. */
  private flushing: Promise<void> | undefined;
  private readonly doorbell: Doorbell | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private failingSince: StorageFailure | undefined;
  private committedTransactions = 0;
  private committedEvents = 0;
  /** The newest seq subscribers have heard of; the feed reads on from here. */
  private announcedThrough: number | undefined;
  /** Feed reads run one at a time, so that events are announced once and in order. */
  private feeding: Promise<void> = Promise.resolve();
  private pruning: Promise<unknown> = Promise.resolve();

  constructor(options: PostgresEventLogOptions) {
    this.logger = (options.logger ?? getLogger()).child({ component: "event-log", storage: "postgres" });
    this.clock = options.clock ?? (() => new Date());
    this.givenClock = options.clock !== undefined;
    this.maxBatchEvents = options.maxBatchEvents ?? 5000;
    this.subscribers = new Subscribers(this.logger);
    this.pool = openPool({
      url: options.url,
      maxConnections: options.maxConnections,
      connectTimeoutMs: options.connectTimeoutMs,
      logger: this.logger,
    });
    this.opening = this.open();
    this.pollTimer = setInterval(() => this.poll(), options.pollIntervalMs ?? 250);
    this.pollTimer.unref();
    if (options.doorbell === true) {
      this.doorbell = new Doorbell({
        url: options.url,
        pool: this.pool,
        logger: this.logger,
        onRing: () => this.poll(),
      });
      this.doorbell.start();
    }
  }

  private open(): Promise<void> {
    const opening = (async () => {
      try {
        await migratePostgres(this.pool);
        this.announcedThrough = await this.readLatestSeq();
      } catch (error) {
        throw this.noteFailure(error);
      }
    })();
    // Nothing may run against the pool before the schema is there; a failed open is seen by the
    // calls that wait for it.
    opening.catch(() => undefined);
    return opening;
  }

  /**
   * Resolves once the schema is migrated and the log is ready. An open that failed because the
   * database was unreachable is tried again here, so a log made while it was down recovers by
   * itself; one refused for good (a newer schema) keeps its refusal.
   */
  async whenReady(): Promise<void> {
    try {
      await this.opening;
    } catch (error) {
      if (!(error instanceof SwarmError) || error.code !== "STORAGE_UNAVAILABLE" || this.closed) throw error;
      this.opening = this.open();
      await this.opening;
    }
  }

  /**
   * The poll for other processes' events: one at a time, so a slow database does not pile reads
   * up, and a ring while one runs is one more poll after it.
   */
  private readonly poll = coalesced(async () => {
    if (this.closed || this.announcedThrough === undefined) return;
    await this.feedSubscribers();
  });

  get isClosed(): boolean {
    return this.closed;
  }

  get storageFailure(): StorageFailure | undefined {
    return this.failingSince;
  }

  writeStats(): { transactions: number; events: number; queued: number } {
    return {
      transactions: this.committedTransactions,
      events: this.committedEvents,
      queued: this.queue.reduce((sum, write) => sum + write.events.length, 0),
    };
  }

  searchIndexedThrough(): number | undefined {
    // The trigram index is written with each row: it covers everything.
    return undefined;
  }

  // ---------------------------------------------------------------- writes

  logEvent(input: EventInput): Promise<StoredEvent> {
    return this.enqueue(() => [prepareEvent(input, this.clock())]).then((stored) => stored[0] as StoredEvent);
  }

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
      // Writes made in the same turn of the event loop share the first commit.
      this.flushing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushQueue());
    });
  }

  /** Commit what is queued, a batch at a time, one commit in flight: writes queue meanwhile and batch better. */
  private async flushQueue(): Promise<void> {
    try {
      while (this.queue.length > 0) await this.writeBatch(this.takeBatch());
    } finally {
      this.flushing = undefined;
    }
  }

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

  private async writeBatch(batch: QueuedWrite[]): Promise<void> {
    if (batch.length === 0) return;
    let stored: StoredEvent[];
    try {
      await this.whenReady();
      stored = await appendPrepared(
        this.pool,
        batch.flatMap((write) => write.events),
      );
    } catch (error) {
      const failure = this.noteFailure(error);
      if (batch.length === 1 || !(failure instanceof SwarmError) || failure.code !== "DUPLICATE_EVENT_ID") {
        for (const write of batch) write.reject(failure);
        return;
      }
      // One caller's bad write (a duplicate id) must not sink the others that shared its batch.
      for (const write of batch) await this.writeBatch([write]);
      return;
    }
    await this.committed(stored);
    let offset = 0;
    for (const write of batch) {
      write.resolve(stored.slice(offset, offset + write.events.length));
      offset += write.events.length;
    }
  }

  /**
   * After a commit of this process's: clear a storage failure, count it, and have subscribers
   * hear of the events (and of any that other connections committed before them) before the
   * writers' promises resolve.
   */
  async committed(stored: readonly StoredEvent[]): Promise<void> {
    if (stored.length === 0) return;
    this.failingSince = undefined;
    this.committedTransactions += 1;
    this.committedEvents += stored.length;
    this.doorbell?.ring();
    await this.feedSubscribers(stored);
  }

  /** Record a failure the storage caused (not the caller's input) and return the error to throw. */
  noteFailure(error: unknown): unknown {
    const failure = toPostgresStorageError(error);
    if (failure instanceof SwarmError && failure.code === "STORAGE_UNAVAILABLE") {
      this.failingSince ??= {
        code: postgresErrorCode(error) ?? "UNKNOWN",
        since: this.clock().toISOString(),
      };
    }
    return failure;
  }

  // ---------------------------------------------------------------- subscriptions

  subscribe(listener: EventListener, filter?: SubscriptionFilter): () => void {
    return this.subscribers.add(listener, filter);
  }

  /**
   * Announce every event after the last one announced, in seq order. `known` are events this
   * process just committed: when they follow on directly, they are announced as they are, with
   * no read; otherwise the gap (another writer's events) is read from the table.
   */
  private feedSubscribers(known: readonly StoredEvent[] = []): Promise<void> {
    const run = this.feeding.then(async () => {
      if (this.closed || this.announcedThrough === undefined) return;
      const first = known[0];
      if (first !== undefined && first.seq === this.announcedThrough + 1) {
        this.announcedThrough = (known.at(-1) as StoredEvent).seq;
        this.subscribers.announce(known);
        return;
      }
      const through = known.at(-1)?.seq ?? Number.MAX_SAFE_INTEGER;
      if (through <= this.announcedThrough) return; // announced already, by an earlier read
      for (;;) {
        const result: pg.QueryResult<EventRow> = await this.pool.query<EventRow>(PG_SQL.feed, [
          this.announcedThrough,
          through,
          FEED_PAGE,
        ]);
        const events: StoredEvent[] = result.rows.map(rowToEvent);
        if (events.length === 0 || this.closed) return;
        this.announcedThrough = (events.at(-1) as StoredEvent).seq;
        this.subscribers.announce(events);
        if (events.length < FEED_PAGE) return;
      }
    });
    // A failed read is retried by the next commit or poll, from where it stopped.
    this.feeding = run.catch((error: unknown) => {
      if (!this.closed) this.logger.warn({ err: error }, "reading new events for subscribers failed");
    });
    return this.feeding;
  }

  // ---------------------------------------------------------------- reads

  /** Run a read, mapping the driver's failures onto the product's errors. */
  /**
   * Run a read of other tables on the log's pool: it waits for the open (and retries one that found
   * the database down), and a failure of the database is answered as STORAGE_UNAVAILABLE.
   */
  async readWith<T>(body: (pool: pg.Pool) => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      await this.whenReady();
      return await body(this.pool);
    } catch (error) {
      throw toPostgresStorageError(error);
    }
  }

  private async read<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<R[]> {
    this.assertOpen();
    try {
      await this.whenReady();
      return (await this.pool.query<R>(sql, params)).rows;
    } catch (error) {
      throw toPostgresStorageError(error);
    }
  }

  async getEvent(id: string): Promise<StoredEvent | null> {
    this.assertOpen();
    if (typeof id !== "string") return null;
    const rows = await this.read<EventRow>(PG_SQL.byId, [id]);
    return rows[0] === undefined ? null : rowToEvent(rows[0]);
  }

  getTaskEvents(taskId: string): Promise<StoredEvent[]> {
    return this.readAll(PG_SQL.taskPage, () => checkIdentifier("INVALID_FILTER", "task_id", taskId));
  }

  getAgentEvents(agentId: string): Promise<StoredEvent[]> {
    return this.readAll(PG_SQL.agentPage, () => checkIdentifier("INVALID_FILTER", "agent_id", agentId));
  }

  private async readAll(sql: string, checkKey: () => string): Promise<StoredEvent[]> {
    this.assertOpen();
    const key = checkKey();
    const events: StoredEvent[] = [];
    let afterSeq = 0;
    for (;;) {
      const rows = await this.read<EventRow>(sql, [key, afterSeq, EVENT_LIMITS.maxPageSize]);
      for (const row of rows) events.push(rowToEvent(row));
      const last = rows.at(-1);
      if (last === undefined || rows.length < EVENT_LIMITS.maxPageSize) return events;
      afterSeq = last.seq;
    }
  }

  async listEvents(filter: EventFilter = {}): Promise<EventPage> {
    this.assertOpen();
    const normalized = normalizeFilter(filter);
    const query = buildListQuery(normalized, POSTGRES_TEXT);
    return toPage(await this.read<EventRow>(numbered(query.sql), query.params), normalized.limit);
  }

  /** The same as `listEvents`: every read here already waits without holding the event loop. */
  listEventsAsync(filter: EventFilter = {}): Promise<EventPage> {
    return this.listEvents(filter);
  }

  async getRecentEvents(minutes = 60, limit: number = EVENT_LIMITS.defaultPageSize): Promise<StoredEvent[]> {
    this.assertOpen();
    const since = windowStart(this.clock(), minutes);
    if (!Number.isInteger(limit) || limit < 1 || limit > EVENT_LIMITS.maxPageSize) {
      throw new SwarmError(
        "INVALID_FILTER",
        `limit: must be an integer from 1 to ${EVENT_LIMITS.maxPageSize}`,
        { field: "limit" },
      );
    }
    return (await this.read<EventRow>(PG_SQL.recent, [since, limit])).map(rowToEvent).sort(newestFirst);
  }

  /**
   * Counts by type over the last `minutes`; over more than two hours, whole hours come from the
   * rollup (which also counts events retention has removed), read in one snapshot with the rest.
   */
  async getEventSummary(minutes = 60): Promise<EventSummary> {
    this.assertOpen();
    const since = windowStart(this.clock(), minutes);
    if (minutes <= SUMMARY_SCAN_MINUTES) {
      return summaryOf(minutes, since, await this.read<TypeCount>(PG_SQL.summary, [since]));
    }
    const wholeHoursFrom = firstWholeHour(since);
    const rows = await this.inSnapshot(async (client) => {
      const unrolled = (await client.query<{ unrolled: number }>(PG_SQL.unrolled)).rows[0]?.unrolled ?? 0;
      if (unrolled > MAX_UNROLLED_FOR_SUMMARY) {
        return (await client.query<TypeCount>(PG_SQL.summary, [since])).rows;
      }
      return [
        ...(await client.query<TypeCount>(PG_SQL.summaryRolledHours, [wholeHoursFrom])).rows,
        ...(await client.query<TypeCount>(PG_SQL.summaryPartialHour, [since, wholeHoursFrom])).rows,
        ...(await client.query<TypeCount>(PG_SQL.summaryUnrolled, [since])).rows,
      ];
    });
    return summaryOf(minutes, since, rows);
  }

  getEventSummaryAsync(minutes = 60): Promise<EventSummary> {
    return this.getEventSummary(minutes);
  }

  async getMinuteCounts(minutes = 60): Promise<MinuteCount[]> {
    this.assertOpen();
    return this.read<MinuteCount>(PG_SQL.minutely, [windowStart(this.clock(), minutes)]);
  }

  async getHourlyCounts(
    given: { since?: string | Date; until?: string | Date } = {},
  ): Promise<HourlyCount[]> {
    this.assertOpen();
    const range = checkRange(given);
    const since =
      range.since === undefined ? "0000" : hourOf(checkTimestamp("INVALID_FILTER", "since", range.since));
    const until = range.until === undefined ? "9999" : checkTimestamp("INVALID_FILTER", "until", range.until);
    // One snapshot, so the rollup and the live count see the same watermark.
    const rows = await this.inSnapshot(async (client) => {
      const rolledUpTo = (await client.query<{ seq: number }>(PG_SQL.rolledUpTo)).rows[0]?.seq ?? 0;
      return [
        ...(await client.query<HourlyCount>(PG_SQL.hourly, [since, until])).rows,
        ...(await client.query<HourlyCount>(PG_SQL.liveHourly, [rolledUpTo])).rows,
      ];
    });
    const totals = new Map<string, HourlyCount>();
    for (const row of rows) {
      if (row.hour < since || row.hour >= until) continue;
      const key = `${row.hour}|${row.event_type}`;
      const seen = totals.get(key);
      if (seen === undefined) totals.set(key, { ...row });
      else seen.count += row.count;
    }
    return [...totals.values()].sort((a, b) =>
      a.hour === b.hour ? (a.event_type < b.event_type ? -1 : 1) : a.hour < b.hour ? -1 : 1,
    );
  }

  async latestSeq(): Promise<number> {
    this.assertOpen();
    try {
      await this.whenReady();
    } catch (error) {
      throw toPostgresStorageError(error);
    }
    return this.readLatestSeq();
  }

  private async readLatestSeq(): Promise<number> {
    try {
      return (await this.pool.query<{ seq: number | null }>(PG_SQL.latestSeq)).rows[0]?.seq ?? 0;
    } catch (error) {
      throw toPostgresStorageError(error);
    }
  }

  async oldestSeq(): Promise<number | null> {
    return (await this.read<{ seq: number | null }>(PG_SQL.oldestSeq, []))[0]?.seq ?? null;
  }

  /** Run `body` in one REPEATABLE READ, read-only transaction: every statement sees the same snapshot. */
  private async inSnapshot<T>(body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      await this.whenReady();
      return await inTransaction(this.pool, body, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    } catch (error) {
      throw toPostgresStorageError(error);
    }
  }

  // ---------------------------------------------------------------- rollup and retention

  /**
   * Fold every event not yet counted into the hourly rollup, a chunk of seqs per transaction.
   * The rollup's row is locked while a chunk is counted, so two processes never count one twice.
   */
  async rollUp(chunkRows = 20_000): Promise<number> {
    this.assertOpen();
    // Up to the newest event now, not one chased for ever under a steady stream of writes.
    const target = await this.latestSeq();
    for (;;) {
      this.assertOpen();
      let step: { to: number; done: boolean };
      try {
        step = await inTransaction(this.pool, async (client) => {
          const from = (await client.query<{ seq: number }>(PG_SQL.lockRollup)).rows[0]?.seq ?? 0;
          // Any seq up to the newest visible one has committed: numbers are handed out in commit order.
          const to = Math.min(from + chunkRows, target);
          if (to <= from) return { to: from, done: true };
          await client.query(PG_SQL.rollUpRange, [from, to]);
          await client.query(PG_SQL.setRolledUpTo, [to]);
          return { to, done: false };
        });
      } catch (error) {
        throw this.noteFailure(error);
      }
      if (step.done) return step.to;
    }
  }

  async pruneEvents(olderThanDays: number): Promise<number> {
    return (await this.prune({ olderThanDays })).deleted;
  }

  /**
   * Delete old events in chunks, each its own short transaction (row locks on a chunk's rows
   * only, for a few milliseconds), then VACUUM the table so the space is reused rather than
   * left to bloat. Runs one at a time; a second call waits for the first.
   */
  prune(options: PruneOptions): Promise<PruneReport> {
    const refusal = retentionRefusal(options.olderThanDays);
    if (refusal !== undefined) return Promise.reject(refusal);
    const run = this.pruning.then(() => this.runPrune(options.olderThanDays, options.targetChunkMs ?? 10));
    this.pruning = run.catch(() => undefined);
    return run;
  }

  /**
   * The database's clock (a test's fake clock when one was given): what cutoffs are judged by,
   * so that a replica whose own clock runs ahead prunes nothing early.
   */
  async databaseNow(): Promise<Date> {
    if (this.givenClock) return this.clock();
    return this.readWith((pool) => databaseNow(pool));
  }

  private async runPrune(olderThanDays: number, targetChunkMs: number): Promise<PruneReport> {
    this.assertOpen();
    const started = performance.now();
    const cutoff = new Date((await this.databaseNow()).getTime() - olderThanDays * DAY_MS).toISOString();
    const countedUpTo = await this.rollUp();
    const deleted = await this.deleteInChunks(
      async (limit) => (await this.write(PG_SQL.pruneChunk, [cutoff, countedUpTo, limit])).rowCount ?? 0,
      { targetChunkMs, initialChunk: PRUNE_CHUNK_BOUNDS.initial, minChunk: PRUNE_CHUNK_BOUNDS.min },
    );
    let vacuum = { ms: 0, pages: 0 };
    if (deleted.rows > 0 && !this.closed) vacuum = await this.vacuum("event_log");
    const report: PruneReport = {
      cutoff,
      deleted: deleted.rows,
      chunks: deleted.chunks,
      longest_delete_ms: deleted.longest_ms,
      longest_vacuum_ms: Math.round(vacuum.ms * 100) / 100,
      freed_pages: vacuum.pages,
      duration_ms: Math.round(performance.now() - started),
    };
    this.logger.debug(report, "prune finished");
    return report;
  }

  /**
   * Delete in chunks sized to take about `targetChunkMs` each: `deleteChunk(limit)` deletes at
   * most `limit` rows in its own transaction and says how many it went through. Other stores on
   * this database (the coordinator's retention of finished work) delete this way too.
   */
  async deleteInChunks(
    deleteChunk: (limit: number) => Promise<number>,
    options: { targetChunkMs?: number; initialChunk?: number; minChunk?: number } = {},
  ): Promise<{ rows: number; chunks: number; longest_ms: number }> {
    const targetChunkMs = options.targetChunkMs ?? 10;
    const bounds = { min: options.minChunk ?? PRUNE_CHUNK_BOUNDS.min, max: PRUNE_CHUNK_BOUNDS.max };
    let rows = 0;
    let chunks = 0;
    let longest = 0;
    let chunkSize = options.initialChunk ?? PRUNE_CHUNK_BOUNDS.initial;
    while (!this.closed) {
      const chunkStarted = performance.now();
      const changes = await deleteChunk(chunkSize);
      const elapsed = performance.now() - chunkStarted;
      longest = Math.max(longest, elapsed);
      rows += changes;
      chunks += 1;
      // Not "fewer than asked": rows another process deleted meanwhile make a chunk short.
      if (changes === 0) break;
      const ratio = Math.min(1.5, Math.max(0.5, targetChunkMs / Math.max(elapsed, 0.1)));
      chunkSize = Math.round(Math.min(bounds.max, Math.max(bounds.min, chunkSize * ratio)));
    }
    return { rows, chunks, longest_ms: Math.round(longest * 100) / 100 };
  }

  /**
   * A plain VACUUM: marks the deleted rows' space for reuse (so the table stops growing) and
   * hands empty pages at the end back to the file system; it takes no lock that blocks reads or
   * writes. Returns how long it took and how many pages the table shrank by.
   */
  private async vacuum(table: "event_log"): Promise<{ ms: number; pages: number }> {
    const size = async () => (await this.read<{ pages: number }>(PG_SQL.tablePages, [table]))[0]?.pages ?? 0;
    const before = await size();
    const started = performance.now();
    await this.write(`VACUUM ${table}`, []);
    const ms = performance.now() - started;
    return { ms, pages: Math.max(0, before - (await size())) };
  }

  /** A write outside the event appends (retention, rollup steps): failures noted like an append's. */
  private async write(sql: string, params: unknown[]): Promise<pg.QueryResult> {
    this.assertOpen();
    try {
      await this.whenReady();
      return await this.pool.query(sql, params);
    } catch (error) {
      throw this.noteFailure(error);
    }
  }

  // ---------------------------------------------------------------- lifecycle

  /** Commit whatever is queued, then close the pool. Later calls fail with EVENT_LOG_CLOSED. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.pollTimer);
    await this.doorbell?.stop();
    // Queued writes are committed (or refused) before the pool goes.
    while (this.flushing !== undefined || this.queue.length > 0) await (this.flushing ?? this.flushQueue());
    await this.feeding;
    await this.pruning;
    this.closed = true;
    this.subscribers.clear();
    await this.pool.end();
  }

  private assertOpen(): void {
    if (this.closed || this.closing !== undefined) {
      throw new SwarmError("EVENT_LOG_CLOSED", "the event log is closed");
    }
  }
}
