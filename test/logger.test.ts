import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { chooseLogFormat, createLogger, redactQueryCredentials } from "../src/logger.js";
import { startStack } from "./helpers/stack.js";
import { tempDbPath } from "./helpers/temp-dir.js";

const KEY = "operator-key-for-log-tests-0123456789";

/** A logger writing into memory, and the JSON lines it has written so far. */
function capturedLogger(level = "info", format: Parameters<typeof createLogger>[2] = "json") {
  let text = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return {
    logger: createLogger(level, sink, format, false),
    text: () => text,
    lines: () =>
      text
        .trim()
        .split("\n")
        .filter(Boolean)
        .map(
          (line) =>
            JSON.parse(line) as {
              msg?: string;
              level?: number;
              req?: { url?: string };
              res?: { statusCode?: number };
              [key: string]: unknown;
            },
        ),
  };
}

describe("operational logs", () => {
  it("keep the stream's token and the operator key out of a real server's request lines", async () => {
    const logs = capturedLogger("debug");
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
      // Refused for parameters it does not take, and logged, masked, all the same.
      expect(events.status).toBe(400);
    } finally {
      await stack.stop();
    }

    const urls = logs
      .lines()
      .filter((line) => line.req !== undefined)
      .map((line) => line.req?.url);
    expect(urls).toEqual([
      "/api/agents",
      "/api/stream?after_seq=0&token=[REDACTED]",
      "/api/events?api_key=[REDACTED]&Access_Token=[REDACTED]&%74oken=[REDACTED]&password=[REDACTED]&limit=1",
    ]);
    expect(logs.text()).not.toContain(KEY);
    expect(logs.text()).not.toMatch(/swarm_[A-Za-z0-9_-]{20,}/);
  });

  it("give a request one line, at debug, once answered, saying what was asked and how it went", async () => {
    for (const level of ["info", "debug"]) {
      const logs = capturedLogger(level);
      const stack = await startStack(tempDbPath(), 0, { app: { logger: logs.logger } });
      try {
        expect((await fetch(`${stack.base}/healthz`)).status).toBe(200);
        expect((await fetch(`${stack.base}/api/events?limit=1&token=${KEY}`)).status).toBe(400);
        expect((await fetch(`${stack.base}/no/such/page`)).status).toBe(404);
      } finally {
        await stack.stop();
      }
      const requestLines = logs.lines().filter((line) => line.req !== undefined || line.res !== undefined);
      if (level === "info") {
        // Fastify's default is two lines per request at info: `npm start` printed little else.
        expect(requestLines, level).toEqual([]);
        continue;
      }
      expect(requestLines.map((line) => [line.level, line.msg])).toEqual([
        [20, expect.stringMatching(/^GET \/healthz 200 \(\d+ ms\)$/)],
        [20, expect.stringMatching(/^GET \/api\/events\?limit=1&token=\[REDACTED\] 400 \(\d+ ms\)$/)],
        [20, expect.stringMatching(/^GET \/no\/such\/page 404 \(\d+ ms\)$/)],
      ]);
      expect(requestLines[0]).toMatchObject({
        req: { method: "GET", url: "/healthz" },
        res: { statusCode: 200 },
      });
      expect(logs.text()).not.toContain(KEY);
    }
  });

  it("write pretty lines when asked, masked like JSON ones", () => {
    const logs = capturedLogger("info", "pretty");
    logs.logger.info({ url: `/api/stream?token=${KEY}` }, "stream opened");
    const text = logs.text();
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: stream opened\n/);
    expect(text).toContain('url: "/api/stream?token=[REDACTED]"');
    expect(text).not.toContain(KEY);
    expect(() => JSON.parse(text.split("\n")[0] ?? "")).toThrow();
  });

  it.each([
    // setting, stdout is a terminal, pino-pretty installed → format, and whether it says so
    ["auto", true, true, "pretty", false],
    ["auto", false, true, "json", false],
    ["auto", true, false, "json", false],
    ["pretty", false, true, "pretty", false],
    ["pretty", true, false, "json", true],
    ["json", true, true, "json", false],
  ] as const)(
    "choose the format: LOG_FORMAT=%s, terminal %s, pino-pretty %s → %s (a warning: %s)",
    (setting, isTerminal, available, format, warns) => {
      const chosen = chooseLogFormat(setting, isTerminal, available);
      expect(chosen.format).toBe(format);
      expect(chosen.warning !== undefined).toBe(warns);
    },
  );

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
