/**
 * Hostile input, generated: fast-check properties over every API route, every dashboard page
 * and form, both websockets, raw bodies (invalid UTF-8, deep JSON, oversized) and stored text
 * shown back on every page. Whatever comes in: never a 5xx, never a crash, an error always in
 * the documented shape, never a row written by a refused request, never a stored string
 * shown unescaped. `npm test` runs each property a little; `npm run fuzz` runs 100,000 cases.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { pino, type Logger } from "pino";
import { Coordinator } from "../src/coordinator/coordinator.js";
import type { CoordinatorPort } from "../src/coordinator/port.js";
import { PostgresCoordinator } from "../src/coordinator/postgres-coordinator.js";
import { ERROR_TABLE } from "../src/errors.js";
import { PostgresEventLog } from "../src/storage/postgres/event-log.js";
import type { EventLogPort } from "../src/storage/port.js";
import { SqliteEventLog } from "../src/storage/sqlite/event-log.js";
import { buildApp, type App } from "../src/web/app.js";

export const FUZZ_KEY = "fuzz-operator-key-0123456789abcdef";
const KNOWN_CODES = new Set(Object.keys(ERROR_TABLE));

interface Target {
  app: App;
  eventLog: EventLogPort;
  /** Rows in every table a request could write. */
  rows: () => Promise<number>;
  agent: { id: string; token: string };
  task: string;
  close: () => Promise<void>;
}

const ROW_COUNT = `SELECT (SELECT COUNT(*) FROM event_log) + (SELECT COUNT(*) FROM tasks) + (SELECT COUNT(*) FROM agents)
  + (SELECT COUNT(*) FROM bids) + (SELECT COUNT(*) FROM agent_tokens) + (SELECT COUNT(*) FROM idempotency_keys) AS n`;

/** The storage a target runs on: SQLite in memory, or the PostgreSQL database `db` names. */
async function storage(
  db: string | undefined,
  logger: Logger,
): Promise<{
  eventLog: EventLogPort;
  coordinator: CoordinatorPort;
  rows: () => Promise<number>;
  close: () => Promise<void>;
}> {
  const rules = { closeWhenAllBid: false };
  if (db === undefined) {
    const eventLog = new SqliteEventLog({ path: ":memory:", logger });
    const coordinator = new Coordinator({ eventLog, logger, rules });
    const count = eventLog.db.prepare(ROW_COUNT).pluck();
    return {
      eventLog,
      coordinator,
      rows: async () => count.get() as number,
      close: async () => {
        coordinator.stop();
        eventLog.close();
      },
    };
  }
  const eventLog = new PostgresEventLog({ url: db, logger });
  await eventLog.whenReady();
  const coordinator = new PostgresCoordinator({ eventLog, logger, rules });
  return {
    eventLog,
    coordinator,
    rows: async () => Number((await eventLog.pool.query<{ n: string }>(ROW_COUNT)).rows[0]?.n),
    close: async () => {
      await coordinator.stop();
      await eventLog.close();
    },
  };
}

/**
 * The whole app on an in-memory SQLite database (or on the PostgreSQL database `db` names), with
 * one agent and one open task to aim at.
 */
async function target(
  options: { dashboardPublic?: boolean; dashboardPublicDetails?: boolean; db?: string } = {},
): Promise<Target> {
  const logger = pino({ level: "silent" });
  const { eventLog, coordinator, rows, close } = await storage(options.db, logger);
  const app = await buildApp({
    eventLog,
    coordinator,
    logger,
    apiKey: FUZZ_KEY,
    rateLimitPerMinute: false,
    expensiveRateLimitPerMinute: false,
    dashboardPublic: options.dashboardPublic ?? false,
    dashboardPublicDetails: options.dashboardPublicDetails ?? false,
  });
  const operator = { authorization: `Bearer ${FUZZ_KEY}` };
  const registered = await app.inject({
    method: "POST",
    url: "/api/agents",
    headers: operator,
    payload: { name: "fuzz-agent", capabilities: ["code"] },
  });
  const { agent, token } = registered.json<{ agent: { id: string }; token: string }>();
  const posted = await app.inject({
    method: "POST",
    url: "/api/tasks",
    headers: operator,
    payload: { description: "a task to aim at", auction_ms: 600_000 },
  });
  return {
    app,
    eventLog,
    rows,
    agent: { id: agent.id, token },
    task: posted.json<{ task: { id: string } }>().task.id,
    async close() {
      await app.close();
      await close();
    },
  };
}

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
  ["GET", "/api/tasks/:id/bids"],
  ["POST", "/api/tasks/:id/bids"],
  ["POST", "/api/tasks/:id/start"],
  ["POST", "/api/tasks/:id/complete"],
  ["POST", "/api/tasks/:id/fail"],
  ["POST", "/api/tasks/:id/cancel"],
  ["POST", "/api/tasks/:id/tools"],
  ["POST", "/api/tasks/:id/assign"],
  ["POST", "/api/tasks/:id/retry"],
  ["GET", "/api/tasks/:id/dependencies"],
  ["POST", "/api/schedules"],
  ["GET", "/api/schedules"],
  ["GET", "/api/schedules/:id"],
  ["POST", "/api/schedules/:id/pause"],
  ["POST", "/api/schedules/:id/resume"],
  ["DELETE", "/api/schedules/:id"],
  ["GET", "/api/status"],
  ["GET", "/api/events"],
  ["GET", "/api/events/summary"],
  ["GET", "/api/events/export"],
  ["GET", "/healthz"],
  ["GET", "/metrics"],
  ["GET", "/openapi.json"],
] as const;

const FIELDS = [
  "name",
  "capabilities",
  "max_concurrent",
  "description",
  "required_capabilities",
  "auction_ms",
  "max_bid_sats",
  "ack_ms",
  "timeout_ms",
  "max_attempts",
  "retry_backoff_ms",
  "assign_to",
  "depends_on",
  "cron",
  "timezone",
  "task",
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
  "after",
  "paged",
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
  "token",
  "__proto__",
  "constructor",
];

/** Text meant to break things: markup, SQL, wildcards, control and lone surrogate characters, edge numbers. */
const hostile = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.constantFrom(
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' OR 1=1 --",
    '"; DROP TABLE event_log; --',
    "') UNION SELECT token_hash FROM agent_tokens --",
    "%",
    "_",
    "\\",
    "*",
    "\u0000",
    "\ud800",
    "\u202e",
    "9".repeat(40),
    "-1",
    "0x10",
    "1e309",
    "NaN",
    "null",
    "[]",
    "{}",
    "task.created",
    "bidding",
    "asc",
    "csv",
    "2026-13-45T99:99:99Z",
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

/** Bodies no well-behaved client sends: broken UTF-8, JSON nested past any limit, too big. */
const rawBody = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
  fc.constantFrom(
    Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), // {"n":"\xff\xfe"}
    Buffer.from([0xc3, 0x28]),
    Buffer.from(`${"[".repeat(100_000)}${"]".repeat(100_000)}`),
    Buffer.from(`{"input":${'{"a":'.repeat(5_000)}1${"}".repeat(5_000)}}`),
    Buffer.from(JSON.stringify({ description: "x".repeat(300 * 1024) })),
    Buffer.from('{"description":"a","description":"b"}'),
    Buffer.from('{"__proto__":{"admin":true},"name":"x"}'),
  ),
);

function assertErrorShape(status: number, body: string, what: string): void {
  assert.ok(status < 500, `${what} → ${status} ${body.slice(0, 300)}`);
  if (status < 400) return;
  const parsed = JSON.parse(body) as { error?: { code?: string; message?: unknown } };
  assert.ok(KNOWN_CODES.has(parsed.error?.code ?? ""), `${what}: unknown error shape ${body.slice(0, 300)}`);
  assert.equal(typeof parsed.error?.message, "string");
}

const seedOf = (seed: number | undefined) => (seed === undefined ? {} : { seed });

/** Every API route with generated bodies, query strings, ids and headers. */
export async function fuzzApi(runs: number, seed?: number, db?: string): Promise<number> {
  const t = await target({ db });
  const ids = [t.agent.id, t.task, "nope", "", "%2F..%2F", "x".repeat(300), "..%00"];
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        fc.constantFrom(...ids),
        fc.oneof(
          fc.constant(undefined),
          fc
            .dictionary(fc.constantFrom(...FIELDS), value, { maxKeys: 5 })
            .map((body) => JSON.stringify(body)),
          value.map((body) => JSON.stringify(body)),
          rawBody,
        ),
        fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(hostile, fc.array(hostile, { maxLength: 3 })), {
          maxKeys: 4,
        }),
        fc.constantFrom(
          undefined,
          `Bearer ${FUZZ_KEY}`,
          `Bearer ${t.agent.token}`,
          "Bearer nope",
          "Basic abc",
          "Bearer",
          "",
          `Bearer ${FUZZ_KEY} extra`,
        ),
        fc.constantFrom(
          undefined,
          "application/json",
          "text/plain",
          "application/x-www-form-urlencoded",
          "application/json; charset=latin1",
          "multipart/form-data; boundary=x",
          "application/json; charset=utf-8",
        ),
        fc.dictionary(
          fc.constantFrom(
            "idempotency-key",
            "accept",
            "origin",
            "x-forwarded-for",
            "cookie",
            "accept-encoding",
          ),
          hostile.map((text) => encodeURIComponent(text.toWellFormed()).slice(0, 300)),
          { maxKeys: 3 },
        ),
        async ([method, template], id, body, query, authorization, contentType, extraHeaders) => {
          const url = template.replace(":id", encodeURIComponent(id.toWellFormed()));
          const headers: Record<string, string> = { ...extraHeaders };
          if (authorization !== undefined) headers.authorization = authorization;
          if (contentType !== undefined) headers["content-type"] = contentType;
          const before = await t.rows();
          const response = await t.app.inject({
            method,
            url,
            query,
            headers,
            ...(body === undefined || method === "GET" || method === "DELETE" ? {} : { payload: body }),
          });
          assertErrorShape(response.statusCode, response.body, `${method} ${url}`);
          if (response.statusCode >= 400)
            assert.equal(await t.rows(), before, `${method} ${url} was refused but wrote`);
        },
      ),
      { numRuns: runs, ...seedOf(seed) },
    );
  } finally {
    await t.close();
  }
  return runs;
}

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
  ["GET", "/static/dashboard.css"],
  ["GET", "/vendor/htmx.min.js"],
  ["POST", "/tasks"],
  ["POST", "/tasks/:id/cancel"],
  ["POST", "/tasks/:id/retry"],
  ["POST", "/tasks/:id/assign"],
  ["GET", "/schedules"],
  ["POST", "/schedules/:id/pause"],
  ["POST", "/schedules/:id/delete"],
  ["POST", "/login"],
  ["POST", "/logout"],
] as const;

const PAGE_FIELDS = [...FIELDS, "live", "before", "next", "key", "auction_seconds", "view", "_csrf"] as const;

/** Every dashboard page and form, with and without a CSRF token and a session. */
export async function fuzzPages(runs: number, seed?: number, db?: string): Promise<number> {
  const t = await target({ dashboardPublic: true, db });
  const login = await t.app.inject({ url: "/login", headers: { accept: "text/html" } });
  const csrfToken = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
  const csrfCookie = `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value ?? ""}`;
  const ids = [t.agent.id, t.task, "nope", "x".repeat(300), "%3Cscript%3E"];
  try {
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
          const before = await t.rows();
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
          const what = `${method} ${url}`;
          assert.ok(
            response.statusCode < 500,
            `${what} → ${response.statusCode} ${response.body.slice(0, 300)}`,
          );
          if (response.statusCode >= 400 && url !== "/events/export") {
            assert.match(String(response.headers["content-type"]), /^text\/html/, what);
            assert.ok(!response.body.includes("<script>alert"), `${what} echoed markup`);
          }
          if (response.statusCode >= 400)
            assert.equal(await t.rows(), before, `${what} was refused but wrote`);
        },
      ),
      { numRuns: runs, ...seedOf(seed) },
    );
  } finally {
    await t.close();
  }
  return runs;
}

/** Both websockets: generated query strings and credentials, then generated frames. */
export async function fuzzSockets(runs: number, seed?: number, db?: string): Promise<number> {
  const t = await target({ dashboardPublic: true, db });
  await t.app.ready();
  // Codes a server may close with on bad input; 1006 (no close frame) or 1011 (a crash) are not among them.
  const fine = new Set([1000, 1001, 1007, 1008, 1009, 1013, 4001, 4400]);
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/api/stream", "/live"),
        fc.dictionary(
          fc.constantFrom(
            "after_seq",
            "type",
            "task_id",
            "agent_id",
            "view",
            "token",
            "status",
            "q",
            "since",
          ),
          hostile,
          { maxKeys: 4 },
        ),
        fc.constantFrom(undefined, `Bearer ${FUZZ_KEY}`, `Bearer ${t.agent.token}`, "Bearer nope"),
        fc.array(
          fc.oneof(
            hostile.map((text) => ({ data: text.toWellFormed(), binary: false })),
            fc.uint8Array({ maxLength: 32 }).map((bytes) => ({ data: Buffer.from(bytes), binary: true })),
            fc.constant({ data: Buffer.from([0xff, 0xfe, 0xfd]), binary: false }), // invalid UTF-8 text
            fc.constant({ data: Buffer.alloc(70 * 1024, 0x61), binary: true }), // past maxPayload
          ),
          { maxLength: 3 },
        ),
        async (path, query, authorization, frames) => {
          const before = await t.rows();
          const url = `${path}?${new URLSearchParams(query).toString()}`;
          let socket;
          try {
            socket = await t.app.injectWS(url, {
              headers: authorization === undefined ? {} : { authorization },
            });
          } catch {
            return; // refused at the handshake with an HTTP error: fine
          }
          const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
          socket.on("error", () => undefined);
          for (const frame of frames) {
            if (socket.readyState === socket.OPEN) socket.send(frame.data, { binary: frame.binary });
          }
          await new Promise((resolve) => setImmediate(resolve));
          if (socket.readyState === socket.OPEN) socket.close(1000);
          const code = await closed;
          assert.ok(fine.has(code), `${url}: closed with ${code}`);
          assert.equal(await t.rows(), before, `${url} wrote`);
        },
      ),
      { numRuns: runs, ...seedOf(seed) },
    );
    assert.equal((await t.app.inject({ url: "/healthz" })).statusCode, 200);
  } finally {
    await t.close();
  }
  return runs;
}

const MARK = "fz9";
/** Markup an attacker stores, each with a marker so that an unescaped copy can be found. */
const payload = fc
  .tuple(
    fc.constantFrom(
      `<${MARK}-tag onmouseover=alert(1)>`,
      `"><${MARK}-tag>`,
      `'><${MARK}-tag>`,
      `<svg/${MARK}-tag onload=alert(1)>`,
      `</textarea><${MARK}-tag>`,
    ),
    fc.string({ maxLength: 20 }),
  )
  .map(([markup, noise]) => `${noise.toWellFormed()}${markup}`);

/**
 * Stored XSS: hostile text goes in through the API (agent names, capabilities, task text,
 * bids' tool data, failure reasons), then every page that shows it is rendered and searched
 * for the markup unescaped.
 */
export async function fuzzStoredText(runs: number, seed?: number, db?: string): Promise<number> {
  // Public viewers with details see every stored text (results, reasons) and may search it.
  const t = await target({ dashboardPublic: true, dashboardPublicDetails: true, db });
  const operator = { authorization: `Bearer ${FUZZ_KEY}` };
  try {
    await fc.assert(
      fc.asyncProperty(payload, payload, payload, async (name, description, output) => {
        const agent = await t.app.inject({
          method: "POST",
          url: "/api/agents",
          headers: operator,
          payload: { name, capabilities: ["code"] },
        });
        assert.ok(agent.statusCode < 500, agent.body);
        const posted = await t.app.inject({
          method: "POST",
          url: "/api/tasks",
          headers: operator,
          payload: { description, auction_ms: 100 },
        });
        assert.ok(posted.statusCode < 500, posted.body);
        if (agent.statusCode !== 201 || posted.statusCode !== 201) return; // refused text: nothing to show
        const { agent: created, token } = agent.json<{ agent: { id: string }; token: string }>();
        const task = posted.json<{ task: { id: string } }>().task.id;
        const auth = { authorization: `Bearer ${token}` };
        await t.app.inject({
          method: "POST",
          url: `/api/tasks/${task}/bids`,
          headers: auth,
          payload: { bid_sats: 1 },
        });
        await t.app.inject({
          method: "POST",
          url: `/api/tasks/${task}/cancel`,
          headers: operator,
          payload: { reason: output },
        });
        const pages = [
          "/",
          "/tasks",
          `/tasks/${task}`,
          "/agents",
          `/agents/${created.id}`,
          "/events",
          `/events?q=${MARK}`,
        ];
        for (const page of pages) {
          const response = await t.app.inject({ url: page, headers: { accept: "text/html" } });
          assert.equal(response.statusCode, 200, page);
          const raw = response.body.includes(`<${MARK}`) || response.body.includes(`<svg/${MARK}`);
          assert.ok(!raw, `${page} shows stored markup unescaped`);
        }
      }),
      { numRuns: runs, ...seedOf(seed) },
    );
  } finally {
    await t.close();
  }
  return runs;
}

/** The properties and their share of a run. */
export const FUZZ_PROPERTIES = [
  { name: "API routes", run: fuzzApi, share: 0.59 },
  { name: "dashboard pages and forms", run: fuzzPages, share: 0.3 },
  { name: "websocket handshakes and frames", run: fuzzSockets, share: 0.1 },
  // Each case stores another agent and task and renders seven pages over all of them: the
  // slowest property by far, and the one whose cases grow dearer as the run goes on.
  { name: "stored text on every page", run: fuzzStoredText, share: 0.01 },
] as const;
