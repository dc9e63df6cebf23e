/**
 * Coordinator benchmark: decisions per second of the pure core, and whole task lifecycles per
 * second through the shell with persistence (post, 5 bids, close, start, complete), beside the
 * raw event-log insert limit measured in the same run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { pino } from "pino";
import { newId as timeOrderedUuid } from "../src/ids.js";
import { Coordinator } from "../src/coordinator/coordinator.js";
import { decide } from "../src/coordinator/decide.js";
import { CoordinatorState } from "../src/coordinator/state.js";
import { DEFAULT_RULES, type Command, type DecisionContext } from "../src/coordinator/types.js";
import { SqliteEventLog } from "../src/storage/sqlite/event-log.js";
import { makeRow, rawLimit } from "./event-log.bench.js";

const logger = pino({ level: "silent" });
const BIDDERS = 5;
const RULES = { ...DEFAULT_RULES, closeWhenAllBid: false };

/** One task's life as commands; `execute` returns the new record's id where there is one. */
function lifecycle(execute: (command: Command) => string | undefined, agents: string[]): number {
  const task_id = execute({ type: "PostTask", description: "benchmark task" }) as string;
  agents.forEach((agent_id, i) => execute({ type: "SubmitBid", task_id, agent_id, bid_sats: 100 + i }));
  execute({ type: "CloseAuction", task_id });
  const winner = agents[0] as string;
  execute({ type: "StartTask", task_id, agent_id: winner });
  execute({ type: "CompleteTask", task_id, agent_id: winner, result: "ok" });
  return 4 + agents.length; // commands per lifecycle
}

export function pureCore(tasks: number): { decisionsPerSecond: number; lifecyclesPerSecond: number } {
  const state = new CoordinatorState();
  let clock = Date.now();
  const ctx = (): DecisionContext => ({ now: new Date(clock++), newId: timeOrderedUuid, rules: RULES });
  const execute = (command: Command) => {
    const decision = decide(state, command, ctx());
    if (!decision.ok) throw new Error(`${command.type} refused: ${decision.code}`);
    state.apply(decision.changes);
    return decision.subject.task?.id ?? decision.subject.agent?.id;
  };
  const agents = Array.from(
    { length: BIDDERS },
    (_, i) => execute({ type: "RegisterAgent", name: `agent-${i}` }) as string,
  );
  let decisions = 0;
  const started = performance.now();
  for (let i = 0; i < tasks; i += 1) decisions += lifecycle(execute, agents);
  const seconds = (performance.now() - started) / 1000;
  return {
    decisionsPerSecond: Math.round(decisions / seconds),
    lifecyclesPerSecond: Math.round(tasks / seconds),
  };
}

function persisted(path: string, tasks: number) {
  const eventLog = new SqliteEventLog({ path, logger });
  const coordinator = new Coordinator({ eventLog, logger, rules: RULES });
  const execute = (command: Command) => {
    const result = coordinator.execute(command);
    return result.task?.id ?? result.agent?.id;
  };
  const agents = Array.from(
    { length: BIDDERS },
    (_, i) => execute({ type: "RegisterAgent", name: `agent-${i}` }) as string,
  );
  const eventsBefore = eventLog.writeStats().events;
  let commands = 0;
  const started = performance.now();
  for (let i = 0; i < tasks; i += 1) commands += lifecycle(execute, agents);
  const seconds = (performance.now() - started) / 1000;
  const events = eventLog.writeStats().events - eventsBefore;
  eventLog.close();
  return {
    commandsPerSecond: Math.round(commands / seconds),
    lifecyclesPerSecond: Math.round(tasks / seconds),
    eventsPerSecond: Math.round(events / seconds),
    eventsPerLifecycle: Math.round(events / tasks),
  };
}

export interface CoordinatorBenchResult {
  pure: ReturnType<typeof pureCore>;
  persisted: ReturnType<typeof persisted>;
  raw_event_inserts_per_second: number;
  raw_single_row_commits_per_second: number;
}

export function benchCoordinator(options: { tasks?: number } = {}): CoordinatorBenchResult {
  const tasks = options.tasks ?? 5000;
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-coordinator-"));
  try {
    const rows = Array.from({ length: 50_000 }, (_, i) => makeRow(i, new Date().toISOString()));
    return {
      pure: pureCore(tasks * 4),
      persisted: persisted(join(dir, "coordinator.db"), tasks),
      raw_event_inserts_per_second: rawLimit(join(dir, "raw.db"), rows, "NORMAL", 1000),
      raw_single_row_commits_per_second: rawLimit(join(dir, "raw1.db"), rows.slice(0, 10_000), "NORMAL", 1),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface FinishedWorkPruneResult {
  tasks: number;
  bids: number;
  idempotency_keys: number;
  agents: number;
  seconds: number;
  chunks: number;
  longest_delete_ms: number;
  max_event_loop_block_ms: number;
}

/**
 * Retention of finished work: `tasks` tasks that ended 40 days ago, five bids and an
 * Idempotency-Key each, and a thousand agents that left as long ago, pruned with a 30-day
 * retention while a ticker watches how long the event loop is held at once.
 */
export async function benchFinishedWorkPrune(
  options: { tasks?: number } = {},
): Promise<FinishedWorkPruneResult> {
  const tasks = options.tasks ?? 200_000;
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-retention-"));
  try {
    const now = Date.now();
    const then = new Date(now - 40 * 86_400_000).toISOString();
    const eventLog = new SqliteEventLog({
      path: join(dir, "retention.db"),
      logger,
      clock: () => new Date(now),
    });
    const db = eventLog.db;
    db.transaction(() => {
      const agent = db.prepare(
        "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen, left_at) " +
          "VALUES (?, ?, '[]', 1, 'offline', ?, ?, ?)",
      );
      for (let i = 0; i < 1000; i += 1) agent.run(`agent-${i}`, `agent ${i}`, then, then, then);
      const task = db.prepare(
        "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, assigned_agent, winning_bid_sats, " +
          "result, created_at, completed_at) VALUES (?, 'benchmark task', 'completed', '[]', 1000, ?, 100, 'ok', ?, ?)",
      );
      const bid = db.prepare(
        "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at, outcome) VALUES (?, 1, ?, ?, ?, ?, ?)",
      );
      const key = db.prepare(
        "INSERT INTO idempotency_keys (key, task_id, created_at, request_digest) VALUES (?, ?, ?, 'digest')",
      );
      for (let i = 0; i < tasks; i += 1) {
        const id = timeOrderedUuid();
        task.run(id, `agent-${i % 1000}`, then, then);
        for (let b = 0; b < BIDDERS; b += 1) {
          bid.run(id, `agent-${(i + b) % 1000}`, 100 + b, b + 1, then, b === 0 ? "won" : "lost");
        }
        key.run(`key-${i}`, id, then);
      }
    })();
    const coordinator = new Coordinator({ eventLog, logger, clock: () => new Date(now) });
    const delay = monitorEventLoopDelay({ resolution: 1 });
    const ticker = setInterval(() => undefined, 1);
    delay.enable();
    const started = performance.now();
    const report = await coordinator.pruneFinished({ taskRetentionDays: 30, idempotencyKeyHours: 24 });
    const seconds = (performance.now() - started) / 1000;
    delay.disable();
    clearInterval(ticker);
    eventLog.close();
    return {
      tasks: report.tasks_deleted,
      bids: report.bids_deleted,
      idempotency_keys: report.idempotency_keys_deleted,
      agents: report.agents_deleted,
      seconds: Math.round(seconds * 10) / 10,
      chunks: report.chunks,
      longest_delete_ms: report.longest_delete_ms,
      max_event_loop_block_ms: Math.round(delay.max / 1e5) / 10,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
