import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { createLogger, redactQueryCredentials } from "../src/logger.js";
import { startStack } from "./helpers/stack.js";
import { tempDbPath } from "./helpers/temp-dir.js";

const KEY = "operator-key-for-log-tests-0123456789";

/** A logger writing into memory, and the JSON lines it has written so far. */
function capturedLogger() {
  let text = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return {
    logger: createLogger("info", sink),
    text: () => text,
    lines: () =>
      text
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { msg?: string; req?: { url?: string }; [key: string]: unknown }),
  };
}

describe("operational logs", () => {
  it("keep the stream's token and the operator key out of a real server's request lines", async () => {
    const logs = capturedLogger();
    const stack = await startStack(tempDbPath(), 0, { apiKey: KEY, app: { logger: logs.logger } });
    try {
      const registered = await fetch(`${stack.base}/api/agents`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ name: "logged" }),
      });
      const { token } = (await registered.json()) as { token: string };

      // Browsers cannot set headers on a websocket, so the stream takes its token in the query.
      const socket = new WebSocket(
        `${stack.base.replace("http", "ws")}/api/stream?after_seq=0&token=${token}`,
      );
      await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
      socket.close();
      await new Promise((resolve) => socket.once("close", resolve));

      const query = `api_key=${KEY}&Access_Token=${KEY}&%74oken=${KEY}&password=${KEY}&limit=1`;
      const events = await fetch(`${stack.base}/api/events?${query}`, {
        headers: { authorization: `Bearer ${KEY}`, cookie: `swarm_session=${KEY}` },
      });
      expect(events.status).toBe(200);
    } finally {
      await stack.stop();
    }

    const urls = logs
      .lines()
      .filter((line) => line.msg === "incoming request")
      .map((line) => line.req?.url);
    expect(urls).toEqual([
      "/api/agents",
      "/api/stream?after_seq=0&token=[REDACTED]",
      "/api/events?api_key=[REDACTED]&Access_Token=[REDACTED]&%74oken=[REDACTED]&password=[REDACTED]&limit=1",
    ]);
    expect(logs.text()).not.toContain(KEY);
    expect(logs.text()).not.toMatch(/swarm_[A-Za-z0-9_-]{20,}/);
  });

  it("mask credential headers in any header object, and credentials quoted in error text", () => {
    const logs = capturedLogger();
    logs.logger.info(
      {
        req: {
          headers: { authorization: `Bearer ${KEY}`, cookie: `swarm_session=${KEY}`, accept: "text/html" },
        },
        res: { headers: { "set-cookie": [`swarm_session=${KEY}`], "content-type": "text/html" } },
        headers: { "proxy-authorization": `Basic ${KEY}`, "x-api-key": KEY },
      },
      "headers",
    );
    logs.logger.error({ err: new Error(`could not fetch /api/stream?token=${KEY}&after_seq=3`) }, "failed");
    const [headers, failed] = logs.lines();
    expect(headers).toMatchObject({
      req: { headers: { authorization: "[REDACTED]", cookie: "[REDACTED]", accept: "text/html" } },
      res: { headers: { "set-cookie": "[REDACTED]", "content-type": "text/html" } },
      headers: { "proxy-authorization": "[REDACTED]", "x-api-key": "[REDACTED]" },
    });
    expect(failed).toMatchObject({
      err: { message: "could not fetch /api/stream?token=[REDACTED]&after_seq=3" },
    });
    expect(logs.text()).not.toContain(KEY);
  });

  it.each([
    ["/api/stream?token=swarm_x", "/api/stream?token=[REDACTED]"],
    ["/a?after_seq=1&TOKEN=x&type=task.created", "/a?after_seq=1&TOKEN=[REDACTED]&type=task.created"],
    [
      "/a?refresh_token=x&client_secret=y&X-Amz-Signature=z",
      "/a?refresh_token=[REDACTED]&client_secret=[REDACTED]&X-Amz-Signature=[REDACTED]",
    ],
    [
      "/a?apikey=x&api-key=y&access%5Ftoken=z",
      "/a?apikey=[REDACTED]&api-key=[REDACTED]&access%5Ftoken=[REDACTED]",
    ],
    ["/a?q=b?token=hidden&x=1", "/a?q=b?token=[REDACTED]&x=1"],
    ["/a?q=token&next=/tasks?status=bidding", "/a?q=token&next=/tasks?status=bidding"],
    ["/a?%zz=1&tok%en=2", "/a?%zz=1&tok%en=2"],
    ["no query at all", "no query at all"],
  ])("mask credentials in %s", (text, masked) => {
    expect(redactQueryCredentials(text)).toBe(masked);
  });
});
