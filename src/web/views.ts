/** Records as the API shows them: an agent with its stats, without internal bookkeeping. */
import { isZombie, reliability } from "../coordinator/decide.js";
import type { CoordinatorPort } from "../coordinator/port.js";
import type { Agent, Bid } from "../coordinator/types.js";
import type { AgentView } from "./schemas.js";

/** `nowMs`: the time to judge its stream by, read once for a whole list. */
export async function agentView(
  coordinator: CoordinatorPort,
  agent: Agent,
  nowMs?: number,
): Promise<AgentView> {
  return {
    id: agent.id,
    name: agent.name,
    status: agent.status,
    capabilities: agent.capabilities,
    max_concurrent: agent.max_concurrent,
    registered_at: agent.registered_at,
    last_seen: agent.last_seen,
    left_at: agent.left_at,
    stats: await coordinator.agentStats(agent.id),
    runs: { completed: agent.runs_completed, failed: agent.runs_failed, timed_out: agent.runs_timed_out },
    reliability: Math.round(reliability(agent) * 1000) / 1000,
    stream: streamState(agent, nowMs ?? (await coordinator.now()).getTime()),
  };
}

/** Whether the agent's stream is open, gone (a zombie if it still heartbeats), or never was. */
export function streamState(agent: Agent, nowMs: number): "listening" | "lost" | "none" {
  if (agent.stream_until === null) return "none";
  return isZombie(agent, nowMs) ? "lost" : "listening";
}

export function bidView(bid: Bid) {
  return {
    task_id: bid.task_id,
    attempt: bid.attempt,
    agent_id: bid.agent_id,
    bid_sats: bid.bid_sats,
    placed_at: bid.placed_at,
    outcome: bid.outcome,
  };
}
