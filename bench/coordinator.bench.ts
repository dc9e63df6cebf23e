/**
 * Coordinator benchmark: decisions per second of the pure core, and whole task lifecycles per
 * second through the shell with persistence (post, 5 bids, close, start, complete), beside the
 * raw event-log insert limit measured in the same run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { newId as timeOrderedUuid } from "../src/ids.js";
import { Coordinator } from "../src/coordinator/coordinator.js";
import { decide } from "../src/coordinator/decide.js";
import { CoordinatorState } from "../src/coordinator/state.js";
import { DEFAULT_RULES, type Command, type DecisionContext } from "../src/coordinator/types.js";
import { EventLog } from "../src/event-log/event-log.js";
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
  const eventLog = new EventLog({ path, logger });
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
