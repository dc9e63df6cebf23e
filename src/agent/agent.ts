/**
 * SwarmAgent: a worker that joins a coordinator over its public API. It registers (or reuses a
 * saved identity), keeps a heartbeat, follows auctions on /api/stream (resuming from its last
 * seq after a drop), bids through a strategy, and runs each task it wins through a handler,
 * reporting tool calls and the outcome.
 */
import { randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import WebSocket from "ws";
import { SwarmApiError, SwarmClient, type AgentIdentity, type TaskView } from "./client.js";
import { matchStrategy, type BidStrategy } from "./strategies.js";

export interface TaskContext {
  task: TaskView;
  /** Aborted when the task is cancelled or failed elsewhere, or the agent stops. */
  signal: AbortSignal;
  /** Run `work` as a reported tool call: `called` before it, `completed` or `failed` after. */
  tool: <T>(name: string, input: unknown, work: () => Promise<T> | T) => Promise<T>;
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
  /** How long stop() lets running tasks finish before leaving. */
  stopGraceMs?: number;
  logger?: AgentLogger;
}

export interface AgentStats {
  bids: number;
  wins: number;
  losses: number;
  completed: number;
  failed: number;
}

const WATCHED_TYPES = ["task.bidding", "task.assigned", "auction.closed", "task.cancelled", "task.failed"];
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

export class SwarmAgent {
  readonly stats: AgentStats = { bids: 0, wins: 0, losses: 0, completed: 0, failed: 0 };
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
  private stopping = false;
  /** Auctions (task:attempt) this agent has bid in, so that each is considered once. */
  private readonly considered = new Set<string>();
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();

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
    await this.join();
    const heartbeatMs = this.options.heartbeatMs ?? 10_000;
    this.heartbeat = setInterval(() => void this.beat(), heartbeatMs);
    this.heartbeat.unref();
    this.connect();
    await this.catchUp();
  }

  /** Leave: no new work, let running tasks finish (up to the grace), then deregister. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.reconnectTimer);
    this.socket?.removeAllListeners();
    this.socket?.close();
    this.socket = undefined;
    const grace = this.options.stopGraceMs ?? 10_000;
    const finished = Promise.all([...this.running.values()].map((run) => run.done));
    const timedOut = await Promise.race([
      finished.then(() => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(true), grace).unref()),
    ]);
    if (timedOut) for (const run of this.running.values()) run.abort.abort(new Error("agent stopping"));
    await Promise.all([...this.running.values()].map((run) => run.done));
    if (this.identity !== undefined) {
      await this.client.deregister(this.identity.id).catch((error: unknown) => {
        this.log.warn({ err: error }, "could not deregister");
      });
    }
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
          this.log.info({ agent_id: saved.id }, "resumed as a registered agent");
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
    this.log.info({ agent_id: identity.id }, "registered");
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
    if (this.identity === undefined || this.stopping) return;
    try {
      await this.client.heartbeat(this.identity.id);
    } catch (error) {
      if (isTransient(error)) {
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
    if (this.stopping) return;
    try {
      const task = known ?? (await this.client.getTask(taskId));
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
        await this.client.bid(task.id, price);
      } catch (error) {
        this.considered.delete(`${key}:bid`);
        throw error;
      }
      this.stats.bids += 1;
      this.log.debug({ task_id: task.id, bid_sats: price }, "bid");
    } catch (error) {
      // Auctions close and fill up all the time; a refused bid is ordinary.
      this.log.debug({ err: error, task_id: taskId }, "did not bid");
    }
  }

  private run(taskId: string, known?: TaskView): Promise<void> {
    const existing = this.running.get(taskId);
    if (existing !== undefined || this.stopping) return existing?.done ?? Promise.resolve();
    const abort = new AbortController();
    const done = this.execute(taskId, known, abort.signal)
      .catch((error: unknown) => this.log.error({ err: error, task_id: taskId }, "task run failed"))
      .finally(() => this.running.delete(taskId));
    this.running.set(taskId, { abort, done });
    return done;
  }

  private async execute(taskId: string, known: TaskView | undefined, signal: AbortSignal): Promise<void> {
    const task = known ?? (await this.retry(() => this.client.getTask(taskId)));
    if (task.status === "assigned") await this.retry(() => this.client.start(taskId));
    else if (task.status !== "running") return;
    this.log.info({ task_id: taskId }, "running task");
    const context: TaskContext = {
      task,
      signal,
      tool: async (name, input, work) => {
        const callId = randomUUID();
        await this.retry(() =>
          this.client.tool(taskId, { tool: name, phase: "called", call_id: callId, input }),
        );
        try {
          const output = await work();
          await this.retry(() =>
            this.client.tool(taskId, { tool: name, phase: "completed", call_id: callId, output }),
          );
          return output;
        } catch (error) {
          const message =
            truncate(error instanceof Error ? error.message : String(error), 10_000) || "failed";
          await this.retry(() =>
            this.client.tool(taskId, { tool: name, phase: "failed", call_id: callId, error: message }),
          );
          throw error;
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
    if (signal.aborted && this.stopping === false) {
      // Cancelled or failed by the coordinator: nothing left to report.
      this.log.info({ task_id: taskId }, "task ended by the coordinator");
      return;
    }
    try {
      if (outcome.ok) await this.retry(() => this.client.complete(taskId, outcome.result));
      else await this.retry(() => this.client.fail(taskId, outcome.reason));
    } catch (error) {
      this.log.warn({ err: error, task_id: taskId }, "could not report the outcome");
      return;
    }
    if (outcome.ok) this.stats.completed += 1;
    else this.stats.failed += 1;
    this.strategy.onOutcome?.(outcome.ok ? "succeeded" : "failed");
    this.log.info({ task_id: taskId, ok: outcome.ok }, outcome.ok ? "task completed" : "task failed");
  }

  /** Retry through a server restart: transient failures are tried again for up to a minute. */
  private async retry<T>(call: () => Promise<T>): Promise<T> {
    for (let attempt = 0, waited = 0; ; attempt += 1) {
      try {
        return await call();
      } catch (error) {
        if (!isTransient(error) || waited > 60_000) throw error;
        const wait = Math.min(5000, 250 * 2 ** attempt);
        waited += wait;
        await delay(wait);
      }
    }
  }
}
