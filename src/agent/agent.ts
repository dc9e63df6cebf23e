/**
 * SwarmAgent: a worker that joins a coordinator over its public API. It registers (or reuses a
 * saved identity), keeps a heartbeat, follows auctions on /api/stream (resuming from its last
 * seq after a drop), bids through a strategy, and runs each task it wins through a handler,
 * reporting tool calls and the outcome. It stops gracefully: tasks in hand get a grace period
 * to finish, and those that do not are handed back to be auctioned again, not failed (being
 * stopped is not the task's fault).
 */
import { randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import WebSocket from "ws";
import { shortId } from "../ids.js";
import { SwarmApiError, SwarmClient, type AgentIdentity, type TaskView } from "./client.js";
import { matchStrategy, type BidStrategy } from "./strategies.js";

export interface TaskContext {
  task: TaskView;
  /**
   * Aborted when the task is cancelled or failed elsewhere, or when the agent is stopping and
   * the grace runs out (the task has then been handed back: whatever the handler returns after
   * that is dropped).
   */
  signal: AbortSignal;
  /** Run `work` as a reported tool call: `called` before it, `completed` or `failed` after. */
  tool: <T>(name: string, input: unknown, work: () => Promise<T> | T) => Promise<T>;
  /** The tasks this one depended on (`depends_on`), completed, each with its `result`. */
  dependencies: TaskView[];
}

/** Runs a won task; what it returns is the result, what it throws fails the task. */
export type TaskHandler = (context: TaskContext) => Promise<string | undefined | void>;

export interface AgentLogger {
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  error(object: object, message?: string): void;
  debug(object: object, message?: string): void;
}

export interface SwarmAgentOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:3000. */
  server: string;
  name: string;
  capabilities?: string[];
  maxConcurrent?: number;
  /** The operator key: registering an agent needs it when the server has one. */
  apiKey?: string;
  /** An identity from an earlier run, reused instead of registering anew. */
  identity?: AgentIdentity;
  /** A file that keeps the identity between runs, kept at mode 600 (refused if it cannot be). */
  identityFile?: string;
  strategy?: BidStrategy;
  handler: TaskHandler;
  heartbeatMs?: number;
  /** Reconnect delays: from `minMs`, doubling per failed try up to `maxMs`, with jitter. */
  reconnect?: { minMs: number; maxMs: number };
  /**
   * How long stop() lets tasks in hand finish (default 10 s). A task still running when it runs
   * out is handed back to the coordinator (`task.released`, auctioned again) and its handler's
   * signal aborts; a task won but not yet started is handed back at once.
   */
  stopGraceMs?: number;
  logger?: AgentLogger;
}

export interface AgentStats {
  bids: number;
  wins: number;
  losses: number;
  completed: number;
  failed: number;
  /** Tasks handed back unfinished on a stop. */
  handedBack: number;
}

const WATCHED_TYPES = [
  "task.bidding",
  "task.assigned",
  "auction.closed",
  "task.cancelled",
  "task.failed",
  "task.timed_out",
  "task.award_expired",
];
const RETRY_CODES = new Set(["HTTP_ERROR", "BAD_RESPONSE", "STORAGE_UNAVAILABLE", "RATE_LIMITED"]);
const silent: AgentLogger = { info() {}, warn() {}, error() {}, debug() {} };

interface StreamEvent {
  seq: number;
  event_type: string;
  task_id: string | null;
  agent_id: string | null;
  data: Record<string, unknown>;
}

/**
 * Wait `ms`; with a signal, stop early with an error once it aborts. For handlers that do
 * timed work, and for backoff between retries.
 */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      reject(new Error("stopped"));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", stop);
      resolve();
    }, ms);
    signal?.addEventListener("abort", stop, { once: true });
  });
}

/** The identity file cannot be kept private; waiting will not fix that. */
export class IdentityFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "IdentityFileError";
  }
}

/**
 * Where a won task is: being fetched and started, in the handler, having its outcome reported,
 * or handed back (then nothing more is reported for it).
 */
type RunPhase = "starting" | "working" | "reporting" | "handed back";

interface Run {
  abort: AbortController;
  done: Promise<void>;
  phase: RunPhase;
  /** Tool calls reported as called and not yet ended, by call_id: a hand-back ends them. */
  openCalls: Map<string, string>;
  /** Tool reports the server refused for a cap on what may be stored (see CAPPED_REPORT). */
  droppedReports: number;
}

/**
 * The caps on what an agent's reports may store (SWARM_MAX_EVENTS_PER_TASK, and bytes per agent
 * per hour). A tool report past one is dropped and the work goes on: a task's completion is never
 * refused, so the task still ends as its handler decides, instead of failing for its telemetry.
 */
const CAPPED_REPORT = new Set(["TASK_EVENTS_CAP_REACHED", "AGENT_HOURLY_BYTES_EXCEEDED"]);
/** How long bidding pauses after a bid refused for the hourly byte cap, if the server says nothing. */
const DEFAULT_BYTES_PAUSE_MS = 60_000;
/** How long a look at an announced auction is retried: about as long as a short auction stays open. */
const CONSIDER_RETRY_MS = 2_000;

/** How long a hand-back is retried through transient failures: a stop must not wait a minute. */
const HAND_BACK_RETRY_MS = 5000;
const BEFORE_START = "agent stopping before it started the task";

/** A network failure or a server that is restarting: worth trying again. */
export function isTransient(error: unknown): boolean {
  if (error instanceof SwarmApiError) return error.status >= 500 || RETRY_CODES.has(error.code);
  return !(error instanceof IdentityFileError);
}

/**
 * The identity file holds the agent's token, so only its owner may read it. `writeFileSync`'s
 * mode applies only when it creates the file: a file that already exists keeps whatever mode it
 * had, so it is tightened here before it is read or rewritten, and refused if it cannot be.
 */
function keepPrivate(file: string): void {
  let stats;
  try {
    stats = statSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // created with 600 when written
    throw new IdentityFileError(`cannot read the mode of identity file ${file}: ${String(error)}`, {
      cause: error,
    });
  }
  if (!stats.isFile()) throw new IdentityFileError(`identity file ${file} is not a regular file`);
  const mode = stats.mode & 0o777;
  if ((mode & 0o077) === 0) return;
  try {
    chmodSync(file, 0o600);
  } catch (error) {
    throw new IdentityFileError(
      `identity file ${file} is open to other users (mode ${mode.toString(8).padStart(4, "0")}) and could not be made private: ${String(error)}`,
      { cause: error },
    );
  }
}

function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`;
}

/**
 * How a log line names a task for a reader: its short id and the start of its description (the
 * full id is in the line's task_id). Tasks posted together have ids that begin alike.
 */
function taskLabel(task: Pick<TaskView, "id" | "description">): string {
  return `${shortId(task.id)} ${JSON.stringify(truncate(task.description, 60))}`;
}

export class SwarmAgent {
  readonly stats: AgentStats = { bids: 0, wins: 0, losses: 0, completed: 0, failed: 0, handedBack: 0 };
  private readonly log: AgentLogger;
  private readonly strategy: BidStrategy;
  private readonly capabilities: string[];
  private readonly maxConcurrent: number;
  private client: SwarmClient;
  private identity: AgentIdentity | undefined;
  private socket: WebSocket | undefined;
  private lastSeq: number | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectTries = 0;
  /** Set by stop(): no new bids, and tasks won from now on are handed back at once. */
  private stopping = false;
  /** Set once deregistered: no more heartbeats. */
  private left = false;
  private stopped: Promise<void> | undefined;
  /** Ends the stop's grace early (a second stop with graceMs 0). */
  private endGrace: (() => void) | undefined;
  /** Auctions (task:attempt) this agent has bid in, so that each is considered once. */
  private readonly considered = new Set<string>();
  /**
   * Set when a bid was refused for the agent's hourly byte cap: until then (the server's
   * Retry-After, the next clock hour) it bids no more, since every bid would be refused too and
   * a task won could not be reported on.
   */
  private biddingPausedUntil = 0;
  private readonly running = new Map<string, Run>();

  constructor(private readonly options: SwarmAgentOptions) {
    this.log = options.logger ?? silent;
    this.capabilities = options.capabilities ?? [];
    this.maxConcurrent = options.maxConcurrent ?? 1;
    this.strategy = options.strategy ?? matchStrategy({ baseSats: 100 });
    this.client = new SwarmClient(options.server);
    this.identity = options.identity;
  }

  get id(): string | undefined {
    return this.identity?.id;
  }

  get runningTasks(): number {
    return this.running.size;
  }

  /** Join: register or resume, start the heartbeat, open the stream. Resolves once joined. */
  async start(): Promise<void> {
    this.stopping = false;
    this.left = false;
    this.stopped = undefined;
    await this.join();
    const heartbeatMs = this.options.heartbeatMs ?? 10_000;
    this.heartbeat = setInterval(() => void this.beat(), heartbeatMs);
    // Not unref'd: while the agent runs, its heartbeat keeps the process alive, as a server's
    // socket would. With nothing else pending (the stream closed, a reconnect timer waiting),
    // Node would otherwise end a `swarm-agent` the moment its server went away. stop() clears it.
    this.connect();
    await this.catchUp();
  }

  /**
   * Leave gracefully: bid no more; let tasks in hand finish for up to the grace (`stopGraceMs`,
   * or `graceMs` here), heartbeating meanwhile; hand back to the coordinator whatever is still
   * running then (their signals abort) and whatever is won meanwhile; then deregister. Calling
   * it again while stopping returns the same promise, and with `graceMs: 0` ends the grace now
   * (a second Ctrl-C).
   */
  stop(options: { graceMs?: number } = {}): Promise<void> {
    if (this.stopped !== undefined) {
      if (options.graceMs === 0) this.endGrace?.();
      return this.stopped;
    }
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    // The heartbeat holds the process; it goes however leaving ends.
    this.stopped = this.leave(options.graceMs ?? this.options.stopGraceMs ?? 10_000).finally(() =>
      clearInterval(this.heartbeat),
    );
    return this.stopped;
  }

  private async leave(graceMs: number): Promise<void> {
    const inHand = () => [...this.running.values()];
    // The stream stays open through the grace, so that a task cancelled meanwhile still stops.
    const graceOver = await Promise.race([
      Promise.all(inHand().map((run) => run.done)).then(() => false),
      new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(true), graceMs);
        timer.unref();
        this.endGrace = () => {
          clearTimeout(timer);
          resolve(true);
        };
      }),
    ]);
    this.endGrace = undefined;
    if (graceOver) {
      const reason = `agent stopping: not finished within its ${graceMs} ms grace`;
      await Promise.all(
        [...this.running.entries()]
          .filter(([, run]) => run.phase === "starting" || run.phase === "working")
          .map(([taskId, run]) => this.handBack(taskId, run, reason)),
      );
    }
    // Outcomes on their way (a handler that finished just in time) are reported before leaving.
    await Promise.all(
      inHand()
        .filter((run) => run.phase !== "handed back")
        .map((run) => run.done),
    );
    clearInterval(this.heartbeat);
    this.socket?.removeAllListeners();
    this.socket?.close();
    this.socket = undefined;
    await this.handBackStrays();
    if (this.identity !== undefined) {
      await this.client.deregister(this.identity.id).catch((error: unknown) => {
        this.log.warn({ err: error }, "could not deregister");
      });
    }
    this.left = true;
  }

  /**
   * Hand a task back: it is auctioned again, not failed. Marked first, so that the handler's
   * late outcome and tool reports are dropped; then the handler's signal aborts, the tool calls
   * it left open are reported failed (while the task is still this agent's, so its timeline
   * does not keep a call that never ended), and the task is released.
   */
  private async handBack(taskId: string, run: Run | undefined, reason: string): Promise<void> {
    if (run !== undefined) {
      run.phase = "handed back";
      run.abort.abort(new Error(reason));
      const open = [...run.openCalls];
      run.openCalls.clear();
      await Promise.all(
        open.map(([callId, tool]) =>
          this.client
            .tool(taskId, { tool, phase: "failed", call_id: callId, error: `abandoned: ${reason}` })
            .catch((error: unknown) =>
              this.log.debug({ err: error, task_id: taskId }, "could not end a tool call"),
            ),
        ),
      );
    }
    try {
      await this.retry(() => this.client.release(taskId, reason), HAND_BACK_RETRY_MS);
      this.stats.handedBack += 1;
      this.log.info({ task_id: taskId, reason }, "task handed back");
    } catch (error) {
      if (error instanceof SwarmApiError && (error.status === 409 || error.status === 403)) {
        // Cancelled meanwhile, or handed back by an earlier try whose answer was lost.
        this.log.debug({ err: error, task_id: taskId }, "nothing to hand back");
      } else {
        // Deregistering puts it up for auction anyway, at the cost of one of its rounds.
        this.log.warn({ err: error, task_id: taskId }, "could not hand the task back");
      }
    }
  }

  /** Tasks the coordinator says are this agent's that it is not running (missed on the stream). */
  private async handBackStrays(): Promise<void> {
    if (this.identity === undefined) return;
    let mine: TaskView[];
    try {
      mine = [
        ...(await this.client.listTasks({ status: "assigned", agent_id: this.identity.id, limit: 200 })),
        ...(await this.client.listTasks({ status: "running", agent_id: this.identity.id, limit: 200 })),
      ];
    } catch (error) {
      this.log.debug({ err: error }, "could not list this agent's tasks before leaving");
      return;
    }
    await Promise.all(
      mine
        .filter((task) => this.running.get(task.id)?.phase !== "handed back")
        .map((task) =>
          this.handBack(
            task.id,
            undefined,
            task.status === "assigned" ? BEFORE_START : "agent stopping without the task in hand",
          ),
        ),
    );
  }

  private async join(): Promise<void> {
    const saved = this.identity ?? this.readIdentity();
    if (saved !== undefined) {
      const client = this.client.withToken(saved.token);
      try {
        const agent = await client.getAgent(saved.id);
        if (agent.left_at === null) {
          this.useIdentity(saved);
          await client.heartbeat(saved.id);
          this.log.info({ agent_id: saved.id }, `resumed as registered agent ${shortId(saved.id)}`);
          return;
        }
      } catch (error) {
        if (isTransient(error)) throw error;
        // Unknown token or agent (a new database): register afresh.
      }
    }
    await this.register();
  }

  private async register(): Promise<void> {
    const operator = new SwarmClient(
      this.options.server,
      this.options.apiKey === undefined ? {} : { token: this.options.apiKey },
    );
    const identity = await operator.register({
      name: this.options.name,
      capabilities: this.capabilities,
      max_concurrent: this.maxConcurrent,
    });
    this.useIdentity(identity);
    this.lastSeq = undefined;
    this.considered.clear();
    this.log.info({ agent_id: identity.id }, `registered as agent ${shortId(identity.id)}`);
    if (this.options.identityFile !== undefined) {
      mkdirSync(dirname(this.options.identityFile), { recursive: true });
      keepPrivate(this.options.identityFile);
      writeFileSync(
        this.options.identityFile,
        `${JSON.stringify({ ...identity, server: this.options.server })}\n`,
        { mode: 0o600 },
      );
    }
  }

  private useIdentity(identity: AgentIdentity): void {
    this.identity = identity;
    this.client = new SwarmClient(this.options.server, { token: identity.token });
  }

  private readIdentity(): AgentIdentity | undefined {
    if (this.options.identityFile === undefined) return undefined;
    keepPrivate(this.options.identityFile);
    try {
      const saved = JSON.parse(readFileSync(this.options.identityFile, "utf8")) as Partial<AgentIdentity> & {
        server?: string;
      };
      if (typeof saved.id !== "string" || typeof saved.token !== "string") return undefined;
      if (saved.server !== undefined && saved.server !== this.options.server) return undefined;
      return { id: saved.id, token: saved.token };
    } catch {
      return undefined;
    }
  }

  private async beat(): Promise<void> {
    // Beats go on through a stop's grace: a grace longer than the heartbeat timeout must not
    // cost the tasks in hand.
    if (this.identity === undefined || this.left) return;
    try {
      await this.client.heartbeat(this.identity.id);
    } catch (error) {
      if (isTransient(error) || this.stopping) {
        this.log.debug({ err: error }, "heartbeat failed; the server may be restarting");
        return;
      }
      // The server no longer knows this agent (a new database, or it was deregistered): rejoin.
      this.log.warn({ err: error }, "the server no longer knows this agent; registering again");
      try {
        await this.register();
        this.socket?.close();
      } catch (registerError) {
        this.log.warn({ err: registerError }, "could not register again");
      }
    }
  }

  // ------------------------------------------------------------------ the stream

  private connect(): void {
    if (this.stopping || this.identity === undefined) return;
    const url = new URL("/api/stream", this.options.server.replace(/^http/, "ws"));
    url.searchParams.set("type", WATCHED_TYPES.join(","));
    if (this.lastSeq !== undefined) url.searchParams.set("after_seq", String(this.lastSeq));
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${this.identity.token}` } });
    this.socket = socket;
    socket.on("open", () => {
      const resumed = this.reconnectTries > 0;
      this.reconnectTries = 0;
      this.log.info({ after_seq: this.lastSeq }, "stream open");
      // Back after a drop: beat at once (the server may have restarted and set us offline),
      // and look at what was decided while away.
      if (resumed) void this.beat().then(() => this.catchUp());
      // The first open too: start()'s catch-up may have read before the stream was open, and an
      // auction that opened in between would be missed (a task handed back just then was).
      else void this.catchUp();
    });
    socket.on("message", (data: Buffer) => this.onMessage(data));
    socket.on("error", (error) => this.log.debug({ err: error }, "stream error"));
    socket.on("close", (code) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      if (this.stopping) return;
      this.scheduleReconnect(code);
    });
  }

  private scheduleReconnect(code: number): void {
    const { minMs, maxMs } = this.options.reconnect ?? { minMs: 500, maxMs: 15_000 };
    const ceiling = Math.min(maxMs, minMs * 2 ** this.reconnectTries);
    const delay = ceiling * (0.5 + Math.random() / 2);
    this.reconnectTries += 1;
    this.log.info({ code, delay_ms: Math.round(delay) }, "stream closed; reconnecting");
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.reconnectTimer.unref();
  }

  private onMessage(data: Buffer): void {
    let message: unknown;
    try {
      message = JSON.parse(data.toString());
    } catch {
      this.log.warn({ bytes: data.length }, "ignored a stream message that is not JSON");
      return;
    }
    if (typeof message !== "object" || message === null) return;
    const { type, event } = message as { type?: unknown; event?: unknown };
    if (type === "resync") {
      void this.catchUp();
      return;
    }
    if (type !== "event" || typeof event !== "object" || event === null) return;
    const candidate = event as Partial<StreamEvent>;
    if (typeof candidate.seq !== "number" || typeof candidate.event_type !== "string") return;
    this.lastSeq = Math.max(this.lastSeq ?? 0, candidate.seq);
    try {
      this.onEvent({
        seq: candidate.seq,
        event_type: candidate.event_type,
        task_id: typeof candidate.task_id === "string" ? candidate.task_id : null,
        agent_id: typeof candidate.agent_id === "string" ? candidate.agent_id : null,
        data: typeof candidate.data === "object" && candidate.data !== null ? candidate.data : {},
      });
    } catch (error) {
      this.log.error({ err: error, seq: candidate.seq }, "could not handle a stream event");
    }
  }

  private onEvent(event: StreamEvent): void {
    const taskId = event.task_id;
    if (taskId === null) return;
    switch (event.event_type) {
      case "task.bidding":
        void this.consider(taskId);
        break;
      case "task.assigned":
        if (event.agent_id === this.identity?.id) void this.run(taskId);
        break;
      case "auction.closed": {
        const attempt = typeof event.data.attempt === "number" ? event.data.attempt : undefined;
        if (attempt === undefined || !this.considered.has(`${taskId}:${attempt}:bid`)) break;
        const won = event.data.winner === this.identity?.id;
        if (won) this.stats.wins += 1;
        else this.stats.losses += 1;
        this.strategy.onOutcome?.(won ? "won" : "lost");
        break;
      }
      case "task.cancelled":
      case "task.failed":
        this.running
          .get(taskId)
          ?.abort.abort(new Error(`task ${event.event_type.slice(5)} by the coordinator`));
        break;
      case "task.timed_out":
        // The run passed the task's timeout_ms: the attempt is over, whatever the handler does.
        if (event.agent_id === this.identity?.id) {
          const limit = typeof event.data.timeout_ms === "number" ? ` after ${event.data.timeout_ms} ms` : "";
          this.running.get(taskId)?.abort.abort(new Error(`task timed out${limit}`));
        }
        break;
      case "task.award_expired":
        // Too late to start (the coordinator passed the award on): drop the run before it starts.
        if (event.data.expired_agent === this.identity?.id)
          this.running.get(taskId)?.abort.abort(new Error("the award lapsed before the task started"));
        break;
    }
  }

  /**
   * What happened while away: tasks already won, and open auctions to consider, every page of
   * them (the first 200 alone left the rest of a busy coordinator's auctions unseen).
   */
  private async catchUp(): Promise<void> {
    if (this.identity === undefined || this.stopping) return;
    try {
      for (const status of ["assigned", "running"]) {
        for await (const task of this.client.eachTask({ status, agent_id: this.identity.id, limit: 200 }))
          void this.run(task.id, task);
      }
      for await (const task of this.client.eachTask({ status: "bidding", limit: 200 })) {
        if (this.stopping) return;
        void this.consider(task.id, task);
      }
    } catch (error) {
      this.log.debug({ err: error }, "catch-up failed; the stream will bring what matters");
    }
  }

  // ------------------------------------------------------------------ bidding and running

  private async consider(taskId: string, known?: TaskView): Promise<void> {
    if (this.stopping || Date.now() < this.biddingPausedUntil) return;
    try {
      // Retried briefly: the replica that announced the auction may be the one that just died.
      const task = known ?? (await this.retry(() => this.client.getTask(taskId), CONSIDER_RETRY_MS));
      const key = `${task.id}:${task.attempt}`;
      if (task.status !== "bidding" || this.considered.has(key)) return;
      this.considered.add(key);
      if (!task.required_capabilities.every((capability) => this.capabilities.includes(capability))) return;
      const price = this.strategy.bid(task, {
        capabilities: this.capabilities,
        running: this.running.size,
        maxConcurrent: this.maxConcurrent,
      });
      if (price === null) return;
      // Marked before sending: the auction can close (and say so on the stream) before the
      // bid's own response arrives.
      this.considered.add(`${key}:bid`);
      try {
        // A bid lost on the way (the replica it reached died, a network blip) is sent again
        // while the auction is open: the same amount twice is one bid, so a repeat is safe.
        const openForMs = Date.parse(task.auction_closes_at ?? "") - Date.now();
        await this.retry(
          () => this.client.bid(task.id, price),
          Number.isFinite(openForMs) ? Math.max(0, openForMs) : 0,
        );
      } catch (error) {
        // Forgotten whole, so that the next catch-up may bid again if the auction is still open.
        this.considered.delete(`${key}:bid`);
        this.considered.delete(key);
        if (error instanceof SwarmApiError && error.code === "AGENT_HOURLY_BYTES_EXCEEDED")
          this.pauseBidding(error);
        throw error;
      }
      this.stats.bids += 1;
      this.log.debug({ task_id: task.id, bid_sats: price }, `bid ${price} sats on ${taskLabel(task)}`);
    } catch (error) {
      // Auctions close and fill up all the time; a refused bid is ordinary.
      this.log.debug({ err: error, task_id: taskId }, `did not bid on ${shortId(taskId)}`);
    }
  }

  private pauseBidding(error: SwarmApiError): void {
    const until = Date.now() + (error.retryAfterMs ?? DEFAULT_BYTES_PAUSE_MS);
    if (until <= this.biddingPausedUntil) return;
    const said = this.biddingPausedUntil > Date.now();
    this.biddingPausedUntil = until;
    if (!said) {
      this.log.warn(
        { paused_until: new Date(until).toISOString() },
        `bidding paused until ${new Date(until).toISOString()}: ${error.message}`,
      );
    }
  }

  /** Send one tool report; one refused for a storage cap is dropped (see CAPPED_REPORT). */
  private async report(taskId: string, run: Run, send: () => Promise<unknown>): Promise<void> {
    try {
      await this.retry(send);
    } catch (error) {
      if (!(error instanceof SwarmApiError) || !CAPPED_REPORT.has(error.code)) throw error;
      run.droppedReports += 1;
      if (run.droppedReports === 1) {
        this.log.warn(
          { task_id: taskId, code: error.code },
          `tool reports of task ${shortId(taskId)} are dropped from now on, the work goes on: ${error.message}`,
        );
      }
    }
  }

  private run(taskId: string, known?: TaskView): Promise<void> {
    const existing = this.running.get(taskId);
    // An attempt the coordinator ended (a timeout) whose handler is still winding down: a new
    // award of the same task (its retry) runs once it has.
    if (existing?.abort.signal.aborted === true) return existing.done.then(() => this.run(taskId));
    if (existing !== undefined) return existing.done;
    const run: Run = {
      abort: new AbortController(),
      done: Promise.resolve(),
      phase: "starting",
      openCalls: new Map(),
      droppedReports: 0,
    };
    // Won while stopping (a bid placed before the stop): starting work it may not finish helps
    // nobody, so the task goes back to auction at once.
    const work = this.stopping ? this.handBack(taskId, run, BEFORE_START) : this.execute(taskId, known, run);
    run.done = work
      .catch((error: unknown) =>
        this.log.error({ err: error, task_id: taskId }, `could not run task ${shortId(taskId)}`),
      )
      .finally(() => this.running.delete(taskId));
    this.running.set(taskId, run);
    return run.done;
  }

  private async execute(taskId: string, known: TaskView | undefined, run: Run): Promise<void> {
    const { signal } = run.abort;
    // Read through a function: the phase changes under awaits (a stop's grace running out).
    const handedBack = () => run.phase === "handed back";
    const task = known ?? (await this.retry(() => this.client.getTask(taskId)));
    if (handedBack() || signal.aborted) return;
    if (this.stopping && task.status === "assigned") {
      await this.handBack(taskId, run, BEFORE_START);
      return;
    }
    if (task.status === "assigned") {
      try {
        await this.retry(() => this.client.start(taskId));
      } catch (error) {
        if (handedBack()) return; // handed back while starting: the start was refused for that
        throw error;
      }
    } else if (task.status !== "running") return;
    if (handedBack()) return;
    const dependencies =
      (task.depends_on ?? []).length === 0 ? [] : await this.retry(() => this.client.dependencies(taskId));
    if (handedBack()) return;
    run.phase = "working";
    this.log.info({ task_id: taskId }, `running task ${taskLabel(task)}`);
    const context: TaskContext = {
      task,
      signal,
      dependencies,
      tool: async (name, input, work) => {
        // The task is no longer this agent's: say nothing more about it.
        if (handedBack()) throw new Error("the task was handed back");
        const callId = randomUUID();
        await this.report(taskId, run, () =>
          this.client.tool(taskId, { tool: name, phase: "called", call_id: callId, input }),
        );
        run.openCalls.set(callId, name);
        try {
          const output = await work();
          if (!handedBack()) {
            await this.report(taskId, run, () =>
              this.client.tool(taskId, { tool: name, phase: "completed", call_id: callId, output }),
            );
          }
          return output;
        } catch (error) {
          if (handedBack()) throw error; // the hand-back has ended the call already
          const message =
            truncate(error instanceof Error ? error.message : String(error), 10_000) || "failed";
          await this.report(taskId, run, () =>
            this.client.tool(taskId, { tool: name, phase: "failed", call_id: callId, error: message }),
          );
          throw error;
        } finally {
          run.openCalls.delete(callId);
        }
      },
    };
    let outcome: { ok: true; result: string } | { ok: false; reason: string };
    try {
      const result = await this.options.handler(context);
      outcome = { ok: true, result: truncate(typeof result === "string" ? result : "", 100_000) };
    } catch (error) {
      outcome = {
        ok: false,
        reason: truncate(error instanceof Error ? error.message : String(error), 10_000) || "failed",
      };
    }
    if (handedBack()) {
      this.log.info({ task_id: taskId }, "handler ended after its task was handed back; outcome dropped");
      return;
    }
    if (signal.aborted) {
      // Cancelled or failed by the coordinator: nothing left to report.
      this.log.info({ task_id: taskId }, `task ${taskLabel(task)} was ended by the coordinator`);
      return;
    }
    run.phase = "reporting";
    try {
      if (outcome.ok) await this.retry(() => this.client.complete(taskId, outcome.result));
      else await this.retry(() => this.client.fail(taskId, outcome.reason));
    } catch (error) {
      this.log.warn(
        { err: error, task_id: taskId },
        `could not report the outcome of task ${taskLabel(task)}`,
      );
      return;
    }
    if (outcome.ok) this.stats.completed += 1;
    else this.stats.failed += 1;
    this.strategy.onOutcome?.(outcome.ok ? "succeeded" : "failed");
    this.log.info(
      { task_id: taskId, ok: outcome.ok },
      `${outcome.ok ? "completed" : "failed"} task ${taskLabel(task)}`,
    );
  }

  /** Retry through a server restart: transient failures are tried again for up to a minute. */
  private async retry<T>(call: () => Promise<T>, maxWaitMs = 60_000): Promise<T> {
    for (let attempt = 0, waited = 0; ; attempt += 1) {
      try {
        return await call();
      } catch (error) {
        if (!isTransient(error)) throw error;
        // The server's Retry-After, when it gave one (a rate limit's window), else backing off.
        const asked = error instanceof SwarmApiError ? error.retryAfterMs : undefined;
        const wait = Math.max(Math.min(5000, 250 * 2 ** attempt), asked ?? 0);
        if (waited + wait > maxWaitMs) throw error;
        waited += wait;
        await delay(wait);
      }
    }
  }
}
