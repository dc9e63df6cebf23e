/**
 * Other sites' pages and names that are not the server's own are refused, so the keyless
 * default cannot be read or driven from a browser page of another origin (or by DNS rebinding).
 * The same holds in a real browser: test/browser/cross-site.test.ts. SQLite only: these are
 * checks on the request's headers, made before any storage is read.
 */
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { hostName, isLoopbackName } from "../../src/web/same-origin.js";
import { buildTestApp } from "../helpers/app.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

const keyless = () => buildTestApp({ apiKey: undefined });

describe("the Host header", () => {
  it.each(["localhost", "localhost:3000", "127.0.0.1:3000", "127.1.2.3", "[::1]:3000", "dash.localhost:80"])(
    "answers requests addressed to the loopback name %s",
    async (host) => {
      const t = await keyless();
      const response = await t.app.inject({ url: "/api/events", headers: { host } });
      expect(response.statusCode).toBe(200);
    },
  );

  it.each(["evil.example:3000", "rebound.attacker.test", "127.0.0.1.evil.example", "localhost.evil.example"])(
    "refuses %s with 421 naming the header, on the API and the dashboard alike",
    async (host) => {
      const t = await keyless();
      await t.task({ description: "a task no other site may see" });
      for (const url of ["/api/events", "/healthz", "/api/stream"]) {
        const response = await t.app.inject({ url, headers: { host } });
        expect(response.statusCode, url).toBe(421);
        expect(response.json<Json>().error).toMatchObject({
          code: "HOST_NOT_ALLOWED",
          details: { field: "headers.host" },
        });
      }
      const page = await t.app.inject({ url: "/", headers: { host, accept: "text/html" } });
      expect(page.statusCode).toBe(421);
      expect(page.body).toContain("does not answer to the name");
      expect(page.body).not.toContain("a task no other site may see");
    },
  );

  it("answers the names in its allow-list, and every name when it is 'any'", async () => {
    const listed = await buildTestApp({ apiKey: undefined, allowedHosts: ["Swarm.Example.com"] });
    const ok = await listed.app.inject({ url: "/api/events", headers: { host: "swarm.example.com:443" } });
    expect(ok.statusCode).toBe(200);
    const other = await listed.app.inject({ url: "/api/events", headers: { host: "other.example.com" } });
    expect(other.statusCode).toBe(421);
    const open = await buildTestApp({ apiKey: undefined, allowedHosts: "any" });
    const any = await open.app.inject({ url: "/api/events", headers: { host: "anything.example" } });
    expect(any.statusCode).toBe(200);
  });

  it("reads host names the way the header writes them", () => {
    expect(hostName("LOCALHOST:3000")).toBe("localhost");
    expect(hostName("[::1]:3000")).toBe("::1");
    expect(hostName("::1")).toBe("::1");
    expect(hostName("example.com")).toBe("example.com");
    expect(isLoopbackName("127.0.0.1")).toBe(true);
    expect(isLoopbackName("128.0.0.1")).toBe(false);
    expect(isLoopbackName("notlocalhost")).toBe(false);
  });
});

describe("state-changing requests from other sites' pages", () => {
  async function biddingTask() {
    const t = await keyless();
    const taskId = await t.task();
    return { t, taskId };
  }

  it.each([
    [{ origin: "http://127.0.0.1:9999" }, "headers.origin"],
    [{ origin: "null" }, "headers.origin"],
    [{ origin: "http://localhost:8080" }, "headers.origin"],
    [{ "sec-fetch-site": "cross-site" }, "headers.sec-fetch-site"],
    [{ "sec-fetch-site": "same-site" }, "headers.sec-fetch-site"],
  ])("refuses a cancel sent with %j (403 naming %s) and cancels nothing", async (headers, field) => {
    const { t, taskId } = await biddingTask();
    const response = await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/cancel`,
      headers: { ...headers, "content-type": "application/json" },
      payload: "{}",
    });
    expect(response.statusCode).toBe(403);
    expect(response.json<Json>().error).toMatchObject({ code: "CROSS_SITE_REQUEST", details: { field } });
    expect(t.coordinator.getTask(taskId)?.status).toBe("bidding");
  });

  it("refuses a 'simple' POST (no JSON content type, no Authorization) with 415, so no page can send it unpreflighted", async () => {
    const { t, taskId } = await biddingTask();
    for (const headers of [{}, { "content-type": "text/plain" }, { "content-type": "multipart/form-data" }]) {
      const response = await t.app.inject({ method: "POST", url: `/api/tasks/${taskId}/cancel`, headers });
      expect(response.statusCode, JSON.stringify(headers)).toBe(415);
      expect(response.json<Json>().error.code).toBe("UNSUPPORTED_MEDIA_TYPE");
    }
    expect(t.coordinator.getTask(taskId)?.status).toBe("bidding");
  });

  it("checks the route, not the raw URL: a percent-encoded /api/ path is refused the same way", async () => {
    const { t, taskId } = await biddingTask();
    const response = await t.app.inject({ method: "POST", url: `/%61pi/tasks/${taskId}/cancel` });
    expect(response.statusCode).toBe(415);
    expect(t.coordinator.getTask(taskId)?.status).toBe("bidding");
  });

  it("refuses API reads a browser marks as another site's, so a page cannot spend the keyless default's budgets", async () => {
    const t = await keyless();
    for (const site of ["cross-site", "same-site"]) {
      const response = await t.app.inject({ url: "/api/events", headers: { "sec-fetch-site": site } });
      expect(response.statusCode).toBe(403);
    }
    expect(
      (await t.app.inject({ url: "/api/events", headers: { "sec-fetch-site": "same-origin" } })).statusCode,
    ).toBe(200);
    // A link from another site to a dashboard page still opens it.
    expect((await t.app.inject({ url: "/", headers: { "sec-fetch-site": "cross-site" } })).statusCode).toBe(
      200,
    );
  });

  it("accepts the same call from a client that is not another site's page", async () => {
    const { t, taskId } = await biddingTask();
    const plain = await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/cancel`,
      headers: {
        "content-type": "application/json",
        host: "127.0.0.1:3000",
        origin: "http://127.0.0.1:3000",
      },
    });
    expect(plain.statusCode).toBe(200);
    expect(t.coordinator.getTask(taskId)?.status).toBe("cancelled");
  });

  it("accepts a body-less call that carries its credentials in an Authorization header", async () => {
    const t = await buildTestApp();
    const taskId = await t.task();
    const response = await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/cancel`,
      headers: t.operator,
    });
    expect(response.statusCode).toBe(200);
  });
});

describe("websockets opened by other sites' pages", () => {
  async function listening() {
    const t = await keyless();
    await t.app.listen({ host: "127.0.0.1", port: 0 });
    return { ...t, port: (t.app.server.address() as AddressInfo).port };
  }

  /** The status the handshake was answered with, or 101 when the socket opened. */
  function handshake(url: string, origin?: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, origin === undefined ? {} : { origin });
      socket.on("open", () => {
        socket.close();
        resolve(101);
      });
      socket.on("unexpected-response", (_request, response) => {
        resolve(response.statusCode ?? 0);
        socket.terminate();
      });
      socket.on("error", reject);
    });
  }

  it("refuses the stream and the live dashboard to a page of another origin, and opens them to its own", async () => {
    const t = await listening();
    await t.task();
    const base = `ws://127.0.0.1:${t.port}`;
    for (const path of ["/api/stream?after_seq=0", "/live?view=overview"]) {
      expect(await handshake(base + path, "http://127.0.0.1:1")).toBe(403);
      expect(await handshake(base + path, "http://evil.example")).toBe(403);
      expect(await handshake(base + path, `http://127.0.0.1:${t.port}`)).toBe(101);
      // A client that is not a browser page sends no Origin.
      expect(await handshake(base + path)).toBe(101);
    }
  });
});
