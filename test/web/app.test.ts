import type { AddressInfo } from "node:net";
import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { buildTestApp } from "../helpers/app.js";
import { eventually } from "../helpers/stack.js";
import { tempDbPath } from "../helpers/temp-dir.js";

// On SQLite: /healthz on PostgreSQL, degraded and recovering, is tested against a real server
// process in test/reliability/postgres-server.test.ts.
describe("health check", () => {
  it("answers ok with the newest seq while the database answers", async () => {
    const { app, eventLog } = await buildTestApp();
    await eventLog.logEvent({ event_type: "system.info", source: "test" });
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(200);
    const { id } = app.coordinator.replica;
    // On SQLite the process is the only replica, and so always the lease's holder.
    expect(response.json()).toEqual({
      status: "ok",
      storage: "sqlite",
      latest_seq: 1,
      replica: { id, leader: true, lease_holder: id, peers: 0 },
    });
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
    expect(health).toMatchObject({
      status: "ok",
      storage: "sqlite",
      latest_seq: 5,
      search_indexed_through: 5,
    });
  });

  it("answers 503 once the database is gone", async () => {
    const { app, eventLog } = await buildTestApp();
    eventLog.close();
    const response = await app.inject({ method: "GET", url: "/healthz" });
    expect(response.statusCode).toBe(503);
    expect(response.json()).toMatchObject({
      status: "unavailable",
      storage: "sqlite",
      replica: { id: app.coordinator.replica.id },
    });
  });
});

describe("shutdown", () => {
  it("is not held open by a connection whose request never finishes arriving", async () => {
    const { app } = await buildTestApp();
    await app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = app.server.address() as AddressInfo;
    const client = connect(port, "127.0.0.1");
    await new Promise((resolve) => client.once("connect", resolve));
    // Headers begun and never ended: the connection is busy, not idle, until Node's 60 s header timeout.
    client.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    const clientGone = new Promise((resolve) => client.once("close", resolve));
    client.on("error", () => undefined);
    // Without the cut-off after the grace for requests in flight, this waits for Node's header
    // timeout (60 s), beyond the test's own timeout.
    await app.close();
    await clientGone;
    expect(client.destroyed).toBe(true);
  }, 30_000);
});
