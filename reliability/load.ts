/**
 * A load that drives the real product over HTTP at full speed, the way operators and agents
 * do, and records every request the server acknowledged (a 2xx) together with the events that
 * acknowledgement promises. The crash scenario checks those promises after each kill -9.
 *
 * The clients behave like careful real ones: a request that got no answer is retried as it
 * was (the same Idempotency-Key, the same bid, the same tool call id), so a retry after a
 * crash must neither lose nor double anything.
 */
import { BENCH_KEY } from "../bench/harness.js";

/** What one acknowledged request promises is in `event_log`. */
export type Ack =
  | { kind: "event"; id: string; seq: number } // the stored event came back in the answer
  | { kind: "task"; task_id: string; event_type: string }
  | { kind: "agent"; agent_id: string; event_type: string }
  | { kind: "bid"; task_id: string; agent_id: string; bid_sats: number; attempt: number };

interface Answer {
  /** 0: no answer at all (refused connection, reset, timeout). */
  status: number;
  // The body as the API sends it; each caller reads the fields its route documents.
  body: Record<string, unknown>;
}

interface TaskView {
  id: string;
  status: string;
  attempt: number;
  required_capabilities: string[];
  assigned_agent: string | null;
  timeout_ms: number | null;
}

/** A small deterministic generator, so that a failing run can be repeated with its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CAPABILITIES = ["code", "search", "data"] as const;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface LoadOptions {
  url: string;
  agents: number;
  operators: number;
  random: () => number;
}

export class Load {
  readonly acked: Ack[] = [];
  /** Answers of 500 or more: the product promises none. */
  readonly serverErrors: string[] = [];
  requests = 0;
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly postedTasks: string[] = [];
  private agents: { id: string; token: string; capabilities: string[] }[] = [];

  constructor(private readonly options: LoadOptions) {}

  /** Register the agents (before any kill), then start every client loop. */
  async start(): Promise<void> {
    for (let i = 0; i < this.options.agents; i += 1) {
      const capabilities = CAPABILITIES.filter(() => this.options.random() < 0.6);
      const answer = await this.call("POST", "/api/agents", BENCH_KEY, {
        name: `load-${i}`,
        capabilities,
        max_concurrent: 3,
      });
      if (answer.status !== 201) throw new Error(`registering an agent failed: ${answer.status}`);
      const agent = answer.body.agent as { id: string };
      this.acked.push({ kind: "agent", agent_id: agent.id, event_type: "agent.joined" });
      this.agents.push({ id: agent.id, token: answer.body.token as string, capabilities });
    }
    // A schedule firing every second through every kill: each firing must post once.
    const schedule = await this.call("POST", "/api/schedules", BENCH_KEY, {
      cron: "* * * * * *",
      task: { description: "scheduled load task", auction_ms: 500 },
    });
    if (schedule.status !== 201) throw new Error(`making the schedule failed: ${schedule.status}`);
    this.running = true;
    this.loops = [
      ...this.agents.map((agent) => this.agentLoop(agent)),
      ...Array.from({ length: this.options.operators }, (_, i) => this.operatorLoop(i)),
    ];
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async call(
    method: string,
    path: string,
    token: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Answer> {
    this.requests += 1;
    try {
      const response = await fetch(`${this.options.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      if (response.status >= 500) this.serverErrors.push(`${method} ${path} → ${response.status} ${text}`);
      return {
        status: response.status,
        body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>),
      };
    } catch {
      return { status: 0, body: {} };
    }
  }

  private async operatorLoop(operator: number): Promise<void> {
    const random = this.options.random;
    for (let n = 0; this.running; n += 1) {
      const key = `op${operator}-${n}`;
      const wanted = CAPABILITIES.filter(() => random() < 0.3);
      // The lifecycle's timers, short enough to come due under load and across kills: awards
      // the agents sometimes leave unstarted, runs they sometimes let hang, retries after a
      // backoff, and now and then a task handed straight to an agent.
      const assignee = random() < 0.05 ? this.agents[Math.floor(random() * this.agents.length)] : undefined;
      const body = {
        description: `load task ${key}`,
        required_capabilities: assignee === undefined ? wanted : [],
        auction_ms: 300 + Math.floor(random() * 1200),
        ack_ms: 800 + Math.floor(random() * 1200),
        ...(random() < 0.3 ? { timeout_ms: 1500 + Math.floor(random() * 1500) } : {}),
        max_attempts: 1 + Math.floor(random() * 3),
        retry_backoff_ms: Math.floor(random() * 400),
        ...(assignee === undefined ? {} : { assign_to: assignee.id }),
        // Some wait on a task posted just before (refused when it has failed already).
        ...(assignee === undefined && random() < 0.1 && this.postedTasks.length > 0
          ? { depends_on: [this.postedTasks[this.postedTasks.length - 1] as string] }
          : {}),
      };
      // No answer: the same request again, with the same key, until one comes.
      for (;;) {
        const answer = await this.call("POST", "/api/tasks", BENCH_KEY, body, { "idempotency-key": key });
        if (answer.status === 200 || answer.status === 201) {
          const task = answer.body.task as TaskView;
          this.acked.push({ kind: "task", task_id: task.id, event_type: "task.created" });
          this.postedTasks.push(task.id);
          break;
        }
        // The agent named may be at capacity: refused, nothing written, and no retry needed.
        if (answer.status !== 0 || !this.running) break;
        await pause(20);
      }
      if (random() < 0.05 && this.postedTasks.length > 0) {
        const victim = this.postedTasks[Math.floor(random() * this.postedTasks.length)] as string;
        const answer = await this.call("POST", `/api/tasks/${victim}/cancel`, BENCH_KEY, { reason: "load" });
        if (answer.status === 200) {
          this.acked.push({ kind: "task", task_id: victim, event_type: "task.cancelled" });
          // Run some of them again: a new task, linked to the old one.
          if (random() < 0.3) {
            const rerun = await this.call("POST", `/api/tasks/${victim}/retry`, BENCH_KEY);
            if (rerun.status === 201) {
              this.acked.push({ kind: "task", task_id: victim, event_type: "task.retried" });
              const task = rerun.body.task as TaskView;
              this.acked.push({ kind: "task", task_id: task.id, event_type: "task.created" });
              this.postedTasks.push(task.id);
            }
          }
        }
      }
      if (random() < 0.01) {
        const answer = await this.call("POST", "/api/agents", BENCH_KEY, { name: `late-${operator}-${n}` });
        if (answer.status === 201) {
          const agent = answer.body.agent as { id: string };
          this.acked.push({ kind: "agent", agent_id: agent.id, event_type: "agent.joined" });
        }
      }
      await pause(2);
    }
  }

  private async agentLoop(agent: { id: string; token: string; capabilities: string[] }): Promise<void> {
    const random = this.options.random;
    const decided = new Set<string>(); // auction rounds this agent has answered (bid or passed)
    const progress = new Map<string, number>(); // "task:attempt" → tool-call steps reported
    let lastBeat = 0;
    while (this.running) {
      if (Date.now() - lastBeat > 250) {
        const beat = await this.call("POST", `/api/agents/${agent.id}/heartbeat`, agent.token);
        if (beat.status === 200) lastBeat = Date.now();
      }
      const open = await this.call("GET", "/api/tasks?status=bidding&limit=20", agent.token);
      for (const task of (open.body.tasks as TaskView[] | undefined) ?? []) {
        const round = `${task.id}:${task.attempt}`;
        if (decided.has(round) || !task.required_capabilities.every((c) => agent.capabilities.includes(c)))
          continue;
        if (random() < 0.25) {
          decided.add(round); // passes on this one, so some auctions run to their deadline
          continue;
        }
        // The same amount for the same round every time, so that a retry is a true repeat.
        const bid_sats = 1 + (hash(`${agent.id}${round}`) % 500);
        const answer = await this.call("POST", `/api/tasks/${task.id}/bids`, agent.token, { bid_sats });
        if (answer.status === 200 || answer.status === 201) {
          const bid = answer.body.bid as { attempt: number };
          this.acked.push({
            kind: "bid",
            task_id: task.id,
            agent_id: agent.id,
            bid_sats,
            attempt: bid.attempt,
          });
        }
        if (answer.status !== 0) decided.add(round);
      }
      const mine = await this.call("GET", `/api/tasks?agent_id=${agent.id}&limit=20`, agent.token);
      for (const task of (mine.body.tasks as TaskView[] | undefined) ?? []) {
        if (task.status === "assigned") {
          // Some awards are never acknowledged: the coordinator passes them on.
          if (hash(`${task.id}:${task.attempt}:${agent.id}`) % 12 === 0) continue;
          const answer = await this.call("POST", `/api/tasks/${task.id}/start`, agent.token);
          if (answer.status === 200)
            this.acked.push({ kind: "task", task_id: task.id, event_type: "task.started" });
        } else if (task.status === "running") {
          await this.work(agent, task, progress);
        }
      }
      if (open.status === 0) await pause(20); // the server is down: do not spin
    }
  }

  /** One step of a running task: a tool call, its completion, then the outcome. */
  private async work(
    agent: { id: string; token: string },
    task: TaskView,
    progress: Map<string, number>,
  ): Promise<void> {
    const round = `${task.id}:${task.attempt}`;
    // Some runs with a deadline hang: the coordinator times them out.
    if (task.timeout_ms !== null && hash(`${round}:hang`) % 4 === 0) return;
    const step = progress.get(round) ?? 0;
    if (step < 2) {
      const phase = step === 0 ? "called" : "completed";
      const answer = await this.call("POST", `/api/tasks/${task.id}/tools`, agent.token, {
        tool: "load.step",
        phase,
        call_id: `${round}:c1`,
        ...(phase === "called" ? { input: { n: 1 } } : { output: "done" }),
      });
      if (answer.status === 200 || answer.status === 201) {
        const event = answer.body.event as { id: string; seq: number };
        this.acked.push({ kind: "event", id: event.id, seq: event.seq });
        progress.set(round, step + 1);
      }
      return;
    }
    const fails = hash(round) % 10 === 0;
    const answer = await this.call(
      "POST",
      `/api/tasks/${task.id}/${fails ? "fail" : "complete"}`,
      agent.token,
      fails ? { reason: "load failure" } : { result: "ok" },
    );
    if (answer.status === 200) {
      // A failure with attempts left is that attempt's, and the task is retried.
      const after = (answer.body.task as TaskView | undefined)?.status;
      this.acked.push({
        kind: "task",
        task_id: task.id,
        event_type: fails ? (after === "failed" ? "task.failed" : "task.attempt_failed") : "task.completed",
      });
      progress.delete(round);
    }
  }
}

/** FNV-1a: a stable number for a string. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
