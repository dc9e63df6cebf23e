import { afterEach } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import { buildApp, type App, type AppOptions } from "../../src/web/app.js";
import { fakeClock, openTestLog, silentLogger } from "./event-log.js";

const apps: App[] = [];

afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});

export const OPERATOR_KEY = "operator-key-for-tests-0123456789";

/** An app on an in-memory database with a fake clock; closed after the test. */
export async function buildTestApp(
  options: Partial<Omit<AppOptions, "eventLog" | "coordinator" | "logger">> & {
    rules?: Partial<CoordinatorRules>;
    path?: string;
  } = {},
) {
  const clock = fakeClock("2026-03-01T12:00:00.000Z");
  const eventLog = openTestLog({ clock: clock.now, ...(options.path ? { path: options.path } : {}) });
  const coordinator = new Coordinator({
    eventLog,
    logger: silentLogger,
    clock: clock.now,
    rules: options.rules,
  });
  const app = await buildApp({
    eventLog,
    coordinator,
    logger: silentLogger,
    rateLimitPerMinute: false,
    expensiveRateLimitPerMinute: false,
    apiKey: OPERATOR_KEY,
    ...options,
  });
  apps.push(app);
  // In open mode (no key) the operator sends no credentials at all.
  const operator: Record<string, string> =
    "apiKey" in options && options.apiKey === undefined ? {} : { authorization: `Bearer ${OPERATOR_KEY}` };
  return {
    app,
    eventLog,
    coordinator,
    clock,
    operator,
    /** Register an agent through the API; returns its id and auth header. */
    async agent(name = "worker", body: Record<string, unknown> = {}) {
      const response = await app.inject({
        method: "POST",
        url: "/api/agents",
        headers: operator,
        payload: { name, ...body },
      });
      if (response.statusCode !== 201) throw new Error(`registration failed: ${response.body}`);
      const { agent, token } = response.json<{ agent: { id: string }; token: string }>();
      return { id: agent.id, token, auth: { authorization: `Bearer ${token}` } };
    },
    /** Bid through the API as `agent`; returns the response. */
    bid(agent: { auth: Record<string, string> }, taskId: string, bidSats: number) {
      return app.inject({
        method: "POST",
        url: `/api/tasks/${taskId}/bids`,
        headers: agent.auth,
        payload: { bid_sats: bidSats },
      });
    },
    async task(body: Record<string, unknown> = {}) {
      const response = await app.inject({
        method: "POST",
        url: "/api/tasks",
        headers: operator,
        payload: { description: "summarize the report", ...body },
      });
      if (response.statusCode !== 201) throw new Error(`post failed: ${response.body}`);
      return response.json<{ task: { id: string } }>().task.id;
    },
  };
}
