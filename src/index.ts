/** The package's public entry: the event log's module API and the app builder. */
export * from "./event-log/index.js";
export { buildApp, type AppOptions } from "./web/app.js";
export { loadConfig, CONFIG_DEFAULTS, type Config } from "./config.js";
export { SwarmError, ERROR_TABLE, isSwarmError, type ErrorCode } from "./errors.js";
export * from "./coordinator/index.js";
