/**
 * Generated requests against every route: whatever the body, query string, path or headers,
 * the answer is never a 5xx, an error always has the documented shape with a known code, and a
 * refused request writes nothing.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ERROR_TABLE } from "../../src/errors.js";
import { buildTestApp, OPERATOR_KEY } from "../helpers/app.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 60);

const ROUTES = [
  ["POST", "/api/agents"],
  ["GET", "/api/agents"],
  ["GET", "/api/agents/:id"],
  ["POST", "/api/agents/:id/heartbeat"],
  ["DELETE", "/api/agents/:id"],
  ["POST", "/api/tasks"],
  ["GET", "/api/tasks"],
  ["GET", "/api/tasks/:id"],
  ["GET", "/api/tasks/:id/events"],
  ["POST", "/api/tasks/:id/bids"],
  ["POST", "/api/tasks/:id/start"],
  ["POST", "/api/tasks/:id/complete"],
  ["POST", "/api/tasks/:id/fail"],
  ["POST", "/api/tasks/:id/cancel"],
  ["POST", "/api/tasks/:id/tools"],
  ["GET", "/api/events"],
  ["GET", "/api/events/summary"],
  ["GET", "/api/events/export"],
  ["GET", "/healthz"],
] as const;

const FIELDS = [
  "name",
  "capabilities",
  "max_concurrent",
  "description",
  "required_capabilities",
  "auction_ms",
  "max_bid_sats",
  "bid_sats",
  "result",
  "reason",
  "tool",
  "phase",
  "call_id",
  "input",
  "output",
  "error",
  "status",
  "agent_id",
  "task_id",
  "limit",
  "cursor",
  "type",
  "source",
  "since",
  "until",
  "after_seq",
  "before_seq",
  "q",
  "order",
  "format",
  "minutes",
  "__proto__",
  "constructor",
];

const hostile = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.constantFrom(
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    '"; DROP TABLE event_log; --',
    "%",
    "_",
    "\\",
    "\u0000",
    "\ud800",
    "9".repeat(40),
    "-1",
    "1e309",
    "NaN",
    "null",
    "[]",
    "{}",
    "task.created",
    "bidding",
    "asc",
    "csv",
  ),
  fc.integer().map(String),
);

const value = fc.oneof(
  hostile,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(hostile, { maxLength: 4 }),
  fc.jsonValue({ maxDepth: 3 }),
);

describe("every route under generated input", () => {
  it("never answers 5xx, always in the error shape, and writes nothing when it refuses", async () => {
    const t = await buildTestApp({ rules: { closeWhenAllBid: false } });
    const agent = await t.agent("fuzz-agent", { capabilities: ["code"] });
    const task = await t.task();
    const ids = [agent.id, task, "nope", "", "%2F..%2F", "x".repeat(300)];
    const counts = () =>
      t.eventLog.db
        .prepare(
          "SELECT (SELECT COUNT(*) FROM event_log) + (SELECT COUNT(*) FROM tasks) + (SELECT COUNT(*) FROM agents) + (SELECT COUNT(*) FROM bids)",
        )
        .pluck()
        .get();
    const knownCodes = new Set(Object.keys(ERROR_TABLE));

    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        fc.constantFrom(...ids),
        fc.oneof(
          fc.constant(undefined),
          fc.dictionary(fc.constantFrom(...FIELDS), value, { maxKeys: 5 }),
          value,
        ),
        fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(hostile, fc.array(hostile, { maxLength: 3 })), {
          maxKeys: 4,
        }),
        fc.constantFrom(
          undefined,
          `Bearer ${OPERATOR_KEY}`,
          `Bearer ${agent.token}`,
          "Bearer nope",
          "Basic abc",
          "Bearer",
          "",
        ),
        fc.constantFrom(
          undefined,
          "application/json",
          "text/plain",
          "application/x-www-form-urlencoded",
          "application/json; charset=latin1",
        ),
        fc.option(hostile, { nil: undefined }),
        async ([method, template], id, body, query, authorization, contentType, idempotencyKey) => {
          const url = template.replace(":id", encodeURIComponent(id.toWellFormed()));
          const headers: Record<string, string> = {};
          if (authorization !== undefined) headers.authorization = authorization;
          if (contentType !== undefined) headers["content-type"] = contentType;
          if (idempotencyKey !== undefined)
            headers["idempotency-key"] = encodeURIComponent(idempotencyKey.toWellFormed()).slice(0, 300);
          const before = counts();
          const response = await t.app.inject({
            method,
            url,
            query: query,
            headers,
            ...(body === undefined || method === "GET" || method === "DELETE"
              ? {}
              : { payload: typeof body === "string" ? body : JSON.stringify(body) }),
          });
          expect(response.statusCode, `${method} ${url} → ${response.body}`).toBeLessThan(500);
          if (response.statusCode >= 400) {
            const parsed = response.json<{ error: { code: string; message: string } }>();
            expect(knownCodes.has(parsed.error.code), response.body).toBe(true);
            expect(typeof parsed.error.message).toBe("string");
            expect(counts(), `${method} ${url} was refused but wrote`).toBe(before);
          }
        },
      ),
      {
        numRuns: RUNS * ROUTES.length,
        seed: process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED),
      },
    );
  }, 120_000);
});

const PAGES = [
  ["GET", "/"],
  ["GET", "/tasks"],
  ["GET", "/tasks/:id"],
  ["GET", "/agents"],
  ["GET", "/agents/:id"],
  ["GET", "/events"],
  ["GET", "/events/export"],
  ["GET", "/login"],
  ["GET", "/live"],
  ["POST", "/tasks"],
  ["POST", "/tasks/:id/cancel"],
  ["POST", "/login"],
  ["POST", "/logout"],
] as const;

const PAGE_FIELDS = [...FIELDS, "live", "before", "next", "key", "auction_seconds", "view", "_csrf"] as const;

describe("every dashboard page and form under generated input", () => {
  it("never answers 5xx, answers refusals as HTML pages, and writes nothing when it refuses", async () => {
    const t = await buildTestApp({ dashboardPublic: true });
    const agent = await t.agent("fuzz-agent");
    const task = await t.task();
    const login = await t.app.inject({ url: "/login", headers: { accept: "text/html" } });
    const csrfToken = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
    const csrfCookie = `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value ?? ""}`;
    const ids = [agent.id, task, "nope", "x".repeat(300), "%3Cscript%3E"];
    const counts = () =>
      t.eventLog.db
        .prepare(
          "SELECT (SELECT COUNT(*) FROM event_log) + (SELECT COUNT(*) FROM tasks) + (SELECT COUNT(*) FROM agents)",
        )
        .pluck()
        .get();

    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...PAGES),
        fc.constantFrom(...ids),
        fc.dictionary(
          fc.constantFrom(...PAGE_FIELDS),
          fc.oneof(hostile, fc.array(hostile, { maxLength: 3 })),
          {
            maxKeys: 5,
          },
        ),
        fc.boolean(),
        async ([method, template], id, fields, withCsrf) => {
          const url = template.replace(":id", encodeURIComponent(id));
          const form = new URLSearchParams();
          for (const [key, values] of Object.entries(fields)) {
            for (const one of Array.isArray(values) ? values : [values]) form.append(key, one.toWellFormed());
          }
          if (withCsrf) form.set("_csrf", csrfToken);
          const before = counts();
          const response = await t.app.inject(
            method === "GET"
              ? { method, url: `${url}?${form.toString()}`, headers: { accept: "text/html" } }
              : {
                  method,
                  url,
                  headers: {
                    accept: "text/html",
                    "content-type": "application/x-www-form-urlencoded",
                    ...(withCsrf
                      ? {
                          cookie: `${csrfCookie}; swarm_session=${encodeURIComponent(String(fields.key ?? "x").toWellFormed())}`,
                        }
                      : {}),
                  },
                  payload: form.toString(),
                },
          );
          expect(response.statusCode, `${method} ${url} → ${response.body.slice(0, 300)}`).toBeLessThan(500);
          if (response.statusCode >= 400 && url !== "/events/export") {
            expect(response.headers["content-type"], `${method} ${url}`).toMatch(/^text\/html/);
            expect(response.body).not.toContain("<script>alert");
          }
          if (response.statusCode >= 400)
            expect(counts(), `${method} ${url} was refused but wrote`).toBe(before);
        },
      ),
      {
        numRuns: RUNS * PAGES.length,
        seed: process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED),
      },
    );
  }, 120_000);
});
