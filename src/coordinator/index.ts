/** The coordinator: the pure core, its state, the store and the shell that persists and keeps time. */
export { Coordinator, type CoordinatorOptions, type CommandResult } from "./coordinator.js";
export { decide, isReachable, COORDINATOR_SOURCE } from "./decide.js";
export { CoordinatorState, withTask, isFinal, type StateView } from "./state.js";
export { CoordinatorStore, type AgentStats } from "../storage/sqlite/coordinator-store.js";
export * from "./types.js";
