/** Records as the API shows them: an agent with its stats, without internal bookkeeping. */
import type { CoordinatorPort } from "../coordinator/port.js";
import type { Agent, Bid } from "../coordinator/types.js";
import type { AgentView } from "./schemas.js";

export async function agentView(coordinator: CoordinatorPort, agent: Agent): Promise<AgentView> {
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
  };
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
