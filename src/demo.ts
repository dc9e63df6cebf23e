/**
 * `npm run demo`: the server with a demo swarm working against it, so the dashboard comes
 * alive within seconds. Uses ./data/demo.db unless SWARM_DB is set.
 */
import { dirname, join } from "node:path";
import { DEMO_STOP_GRACE_MS, startDemoSwarm } from "./agent/demo-swarm.js";
import { loadConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { reportStartFailure, startServer, stopOnSignals } from "./run-server.js";

async function main(): Promise<void> {
  const config = loadConfig({ SWARM_DB: "./data/demo.db", ...process.env });
  const logger = createLogger(config.logLevel, undefined, config.logFormat);
  const server = await startServer(config, logger);
  // The agents' grace fits in the shutdown's, with room for the server's own stop after it.
  const agentGraceMs = Math.max(
    0,
    Math.min(DEMO_STOP_GRACE_MS, Math.floor((config.shutdownGraceMs - 1000) / 2)),
  );
  const swarm = await startDemoSwarm({
    stopGraceMs: agentGraceMs,
    server: server.url,
    apiKey: config.apiKey,
    identityDir:
      config.database.engine !== "sqlite" || config.database.path === ":memory:"
        ? undefined
        : join(dirname(config.database.path), "demo-agents"),
    logger: logger.child({ component: "demo" }),
  });
  process.stdout.write(
    `\nDemo swarm running: ${swarm.agents.length} agents and a task every 2 s.\nDashboard: ${server.url}/   ` +
      `(Ctrl-C stops it: tasks in hand get ${agentGraceMs / 1000} s to finish, the rest are handed back)\n\n`,
  );
  stopOnSignals(
    logger,
    async () => {
      await swarm.stop();
      await server.shutdown();
    },
    config.shutdownGraceMs,
  );
}

main().catch(reportStartFailure);
