import { describe, expect, it } from "vitest";
import { buildTestApp } from "../helpers/app.js";

describe("health check", () => {
  it("answers ok with the newest seq while the database answers", async () => {
    const { app, eventLog } = await buildTestApp();
    await eventLog.logEvent({ event_type: "system.info", source: "test" });
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: "ok", latest_seq: 1 });
  });

  it("answers 503 once the database is gone", async () => {
    const { app, eventLog } = await buildTestApp();
    eventLog.close();
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(503);
    expect(response.json()).toEqual({ status: "unavailable" });
  });
});
