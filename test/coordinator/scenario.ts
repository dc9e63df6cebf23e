import { decide } from "../../src/coordinator/decide.js";
import { CoordinatorState } from "../../src/coordinator/state.js";
import {
  DEFAULT_RULES,
  type Accepted,
  type Command,
  type CoordinatorRules,
  type Decision,
  type DecisionContext,
} from "../../src/coordinator/types.js";

export const START = Date.parse("2026-03-01T12:00:00.000Z");

/** Given/when/then over the pure core: a state in memory, a fake clock and counted ids. */
export function scenario(rules: Partial<CoordinatorRules> = {}) {
  let now = START;
  let ids = 0;
  const state = new CoordinatorState();
  const ctx = (): DecisionContext => ({
    now: new Date(now),
    newId: () => `00000000-0000-4000-8000-${String(++ids).padStart(12, "0")}`,
    rules: { ...DEFAULT_RULES, ...rules },
  });
  /** Decide without applying: the "when" of a test. */
  const when = (command: Command): Decision => decide(state, command, ctx());
  /** Decide and apply, as the shell does after a commit. */
  const run = (command: Command): Decision => {
    const decision = when(command);
    if (decision.ok) state.apply(decision.changes);
    return decision;
  };
  /** A step of the setup that must be accepted. */
  const given = (command: Command): Accepted => {
    const decision = run(command);
    if (!decision.ok)
      throw new Error(`given ${command.type} was refused: ${decision.code} ${decision.message}`);
    return decision;
  };
  const agent = (name = "worker", extra: Partial<Extract<Command, { type: "RegisterAgent" }>> = {}) =>
    given({ type: "RegisterAgent", name, ...extra }).subject.agent!.id;
  const task = (extra: Partial<Extract<Command, { type: "PostTask" }>> = {}) =>
    given({ type: "PostTask", description: "summarize the report", ...extra }).subject.task!.id;
  return {
    state,
    ctx,
    when,
    run,
    given,
    agent,
    task,
    advance(ms: number) {
      now += ms;
    },
    get now() {
      return now;
    },
  };
}

export function types(decision: Decision): string[] | string {
  return decision.ok ? decision.events.map((event) => event.event_type) : decision.code;
}

export function expectAccepted(decision: Decision): Accepted {
  if (!decision.ok) throw new Error(`refused: ${decision.code} ${decision.message}`);
  return decision;
}

export function eventOf(decision: Decision, type: string) {
  return expectAccepted(decision).events.find((event) => event.event_type === type);
}
