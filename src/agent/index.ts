/** The agent SDK: join a coordinator over its public API, bid, and run won tasks. */
export {
  SwarmAgent,
  IdentityFileError,
  type SwarmAgentOptions,
  type TaskContext,
  type TaskHandler,
  type AgentStats,
  type AgentLogger,
} from "./agent.js";
export { SwarmClient, SwarmApiError, type TaskView, type AgentIdentity } from "./client.js";
export {
  matchStrategy,
  adaptiveStrategy,
  clampBid,
  type BidStrategy,
  type BidContext,
  type MatchStrategyOptions,
  type AdaptiveStrategyOptions,
} from "./strategies.js";
export { startDemoSwarm, DEMO_PROFILES, DEMO_TASKS, type DemoSwarm } from "./demo-swarm.js";
export { execHandler, simulatedHandler, parseCommand, HELP } from "./cli.js";
