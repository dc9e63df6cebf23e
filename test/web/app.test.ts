import { describe, expect, it } from "vitest";
import { buildTestApp } from "../helpers/app.js";
import { eventually } from "../helpers/stack.js";
import { tempDbPath } from "../helpers/temp-dir.js";

describe("health check", () => {
  it("answers ok with the newest seq while the database answers", async () => {
    const { app, eventLog } = await buildTestApp();
    await eventLog.logEvent({ event_type: "system.info", source: "test" });
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: "ok", storage: "sqlite", latest_seq: 1 });
  });

  it("says how far the text-search index has come, so that a reader knows what searches scan", async () => {
    const { app, eventLog } = await buildTestApp({ path: tempDbPath() });
    await eventLog.logEvents(
      Array.from({ length: 5 }, (_, i) => ({ event_type: "system.info", source: "test", data: { i } })),
    );
    const health = await eventually(
      async () => (await app.inject({ method: "GET", url: "/healthz" })).json<Record<string, unknown>>(),
      (body) => body.search_indexed_through === 5,
    );
    expect(health).toEqual({ status: "ok", storage: "sqlite", latest_seq: 5, search_indexed_through: 5 });
  });

  it("answers 503 once the database is gone", async () => {
    const { app, eventLog } = await buildTestApp();
    eventLog.close();
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(503);
    expect(response.json()).toEqual({ status: "unavailable", storage: "sqlite" });
  });
});
