import { describe, expect, it } from "vitest";
import { buildApp } from "../../src/web/app.js";
import { openTestLog, silentLogger } from "../helpers/event-log.js";

describe("health check", () => {
  it("answers ok with the newest seq while the database answers", async () => {
    const eventLog = openTestLog();
    await eventLog.logEvent({ event_type: "system.info", source: "test" });
    const app = buildApp({ eventLog, logger: silentLogger });
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: "ok", latest_seq: 1 });
    await app.close();
  });

  it("answers 503 once the database is gone", async () => {
    const eventLog = openTestLog();
    const app = buildApp({ eventLog, logger: silentLogger });
    eventLog.close();
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(503);
    expect(response.json()).toEqual({ status: "unavailable" });
    await app.close();
  });
});
