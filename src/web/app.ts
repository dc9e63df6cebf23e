/**
 * buildApp(): the whole HTTP application as a Fastify instance, built from its parts. Tests
 * call it with `inject`; `server.ts` only reads configuration and listens.
 */
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import helmet from "@fastify/helmet";
import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import websocket from "@fastify/websocket";
import { Ajv } from "ajv";
import Fastify, {
  type FastifyBaseLogger,
  type FastifySchema,
  type FastifyInstance,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from "fastify";
import type { FastifyRouteSchemaDef } from "fastify/types/schema.js";
import type { Coordinator } from "../coordinator/coordinator.js";
import { SwarmError } from "../errors.js";
import type { EventLog } from "../event-log/event-log.js";
import type { Logger } from "../logger.js";
import { bearerToken, guards, hashToken, resolveCaller, TokenStore } from "./auth.js";
import { installErrorHandling, sendError, toSwarmError } from "./errors.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { agentRoutes } from "./routes/agents.js";
import { eventRoutes } from "./routes/events.js";
import { opsRoutes } from "./routes/ops.js";
import { STREAM_CLOSE, STREAM_DEFAULTS, streamRoutes, type StreamOptions } from "./routes/stream.js";
import { taskRoutes } from "./routes/tasks.js";
import { dashboard, type DashboardPages } from "./dashboard/index.js";
import { LIVE_CLOSE, LIVE_DEFAULTS, type LiveOptions } from "./dashboard/live.js";

export interface AppOptions {
  eventLog: EventLog;
  coordinator: Coordinator;
  logger: Logger;
  /** SWARM_API_KEY: the operator's key. Unset: operator actions are open (the server listens on loopback only). */
  apiKey?: string;
  /** Largest request body, in bytes. Default 256 KiB. */
  bodyLimit?: number;
  /** Requests per minute per credential (or per IP without one); false turns limiting off. Default 1200. */
  rateLimitPerMinute?: number | false;
  stream?: Partial<StreamOptions>;
  live?: Partial<LiveOptions>;
  /** With a key set: whether the dashboard may be viewed without logging in. Default false. */
  dashboardPublic?: boolean;
  /** Websockets held open at once; one more is closed at once with 1013 (try again later). Default 2000. */
  maxSockets?: number;
  /** Process-wide metrics (CPU, memory, event loop) on /metrics; off in tests that build many apps. */
  defaultMetrics?: boolean;
  /**
   * SWARM_TRUST_PROXY: peers whose X-Forwarded-For/-Proto/-Host set `request.ip`, `.protocol`
   * and `.host`. Default false: the socket's own address and protocol, whatever the headers say.
   */
  trustProxy?: boolean | string[];
}

/** How long shutdown waits for websocket clients to answer the close frame. */
const SOCKET_CLOSE_GRACE_MS = 1000;

export type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

declare module "fastify" {
  interface FastifyInstance {
    eventLog: EventLog;
    coordinator: Coordinator;
    tokens: TokenStore;
    guard: ReturnType<typeof guards>;
    apiKey: string | undefined;
    metrics: Metrics;
    /** Call first in a websocket route: false when the socket was over the limit and is being closed. */
    admitSocket: (socket: WebSocket) => boolean;
  }
}

// Bodies are JSON and must be exactly right: no coercion, and unknown fields are refused by
// name rather than silently dropped. Query strings and params are text, so they are coerced.
const bodyAjv = new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false });
const textAjv = new Ajv({
  removeAdditional: false,
  coerceTypes: "array",
  useDefaults: true,
  allErrors: false,
});

/** Where a number that is not finite sits in coerced text input, as an Ajv instance path. */
function nonFinitePath(data: unknown, path = ""): string | undefined {
  if (typeof data === "number") return Number.isFinite(data) ? undefined : path;
  if (typeof data !== "object" || data === null) return undefined;
  for (const [key, value] of Object.entries(data)) {
    const found = nonFinitePath(value, `${path}/${key}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

function compileValidator({ schema, httpPart }: FastifyRouteSchemaDef<FastifySchema>) {
  if (httpPart === "body") return bodyAjv.compile(schema as object);
  const validate = textAjv.compile(schema as object);
  // Ajv coerces "1e309" and "Infinity" to Infinity and then lets it past `maximum`; text never
  // means an infinite number here, so such a value is refused by name.
  const checked = (data: unknown): boolean => {
    const valid = validate(data);
    checked.errors = validate.errors;
    const path = valid ? nonFinitePath(data) : undefined;
    if (path === undefined) return valid;
    checked.errors = [
      { instancePath: path, schemaPath: "", keyword: "type", params: {}, message: "must be a finite number" },
    ];
    return false;
  };
  checked.errors = validate.errors;
  return checked;
}

export async function buildApp(options: AppOptions): Promise<App> {
  const loggerInstance: FastifyBaseLogger = options.logger;
  const app = Fastify({
    loggerInstance,
    trustProxy: options.trustProxy ?? false,
    bodyLimit: options.bodyLimit ?? 256 * 1024,
    // Long enough for any id the schemas allow, so that they, not the router, name the problem.
    routerOptions: { maxParamLength: 1000 },
    // Errors the router raises before any route runs (a malformed URL): the same error shape.
    frameworkErrors: (error, _request, reply) => {
      void sendError(reply, toSwarmError(error) ?? new SwarmError("VALIDATION_FAILED", error.message));
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(compileValidator);
  // `curl -X POST -H 'content-type: application/json'` with no body means "no fields", not an
  // error; anything else goes through Fastify's parser, which refuses __proto__ poisoning.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    const text = body.toString();
    if (text.trim() === "") return done(null, {});
    // The default parser answers through `done`; what it returns is of no use here.
    void parseJson(request, text, done);
  });
  // Bodies are JSON only. Fastify parses text/plain by default, which let a text body through to
  // the schema ("body: must be object") instead of being refused for its type. The dashboard's
  // form parser is its own plugin's and still takes precedence over this catch-all there.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("*", (request, _payload, done) => {
    const type = request.headers["content-type"];
    const what = type === undefined ? "a body without a Content-Type" : `Content-Type ${type.slice(0, 100)}`;
    done(
      new SwarmError("UNSUPPORTED_MEDIA_TYPE", `${what} is not accepted; send the body as application/json`),
    );
  });

  const tokens = new TokenStore(options.eventLog.db);
  const apiKeyHash = options.apiKey === undefined ? undefined : hashToken(options.apiKey);
  const metrics = createMetrics(options.eventLog, { defaultMetrics: options.defaultMetrics ?? false });
  app.decorate("eventLog", options.eventLog);
  app.decorate("coordinator", options.coordinator);
  app.decorate("tokens", tokens);
  app.decorate("guard", guards(options.apiKey));
  app.decorate("apiKey", options.apiKey);
  app.decorate("metrics", metrics);
  app.decorateRequest("caller", null as never);
  app.addHook("onClose", async () => metrics.stop());

  // Filled in when the dashboard registers: its HTML not-found page and its live hub.
  const pages: DashboardPages = {};
  installErrorHandling(app, (request, reply) => pages.notFound?.(request, reply));

  // Who is calling, settled before anything else (rate limiting keys on it).
  app.addHook("onRequest", async (request) => {
    try {
      let token = bearerToken(request);
      if (token === undefined && request.url.startsWith("/api/stream")) {
        // Browsers cannot set headers on a WebSocket; the stream also takes ?token=.
        const query = request.query as { token?: unknown };
        if (typeof query.token === "string") token = query.token;
      }
      request.caller = resolveCaller(token, { apiKeyHash, tokens });
    } catch (error) {
      // A websocket upgrade refused this early keeps its socket open (a @fastify/websocket
      // quirk); the route's guard refuses it later, which closes it.
      if (!(error instanceof SwarmError) || request.headers.upgrade?.toLowerCase() !== "websocket")
        throw error;
      request.caller = { kind: "invalid", problem: error };
    }
  });
  // A POST with no body at all means "no fields": an empty object, checked like any other.
  app.addHook("preValidation", async (request) => {
    if (request.method === "POST" && request.body === undefined) request.body = {};
  });
  app.addHook("onResponse", async (request, reply) => {
    metrics.httpDuration.observe(
      {
        method: request.method,
        route: request.routeOptions.url ?? "unmatched",
        status: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
  });

  const cspDirectives = {
    defaultSrc: ["'self'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'", "data:"],
    connectSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
  };
  // helmet's defaults add upgrade-insecure-requests, which over plain HTTP on a host name sends
  // the stylesheet, htmx and the page script to https, where nothing answers: the page loads
  // bare. It is asked for only when the request came over TLS (directly, or from a trusted proxy).
  await app.register(helmet, {
    contentSecurityPolicy: { directives: { ...cspDirectives, upgradeInsecureRequests: null } },
  });
  app.addHook("onRequest", async (request, reply) => {
    if (request.protocol === "https") reply.helmet({ contentSecurityPolicy: { directives: cspDirectives } });
  });
  if (options.rateLimitPerMinute !== false) {
    await app.register(rateLimit, {
      max: options.rateLimitPerMinute ?? 1200,
      timeWindow: 60_000,
      keyGenerator: (request) =>
        request.caller.kind === "agent"
          ? `agent:${request.caller.agentId}`
          : request.caller.kind === "operator"
            ? "operator"
            : `ip:${request.ip}`,
      errorResponseBuilder: (_request, context) =>
        new SwarmError(
          "RATE_LIMITED",
          `rate limit of ${context.max} requests per minute reached; retry in ${context.after}`,
          {
            retry_after: context.after,
          },
        ),
    });
  }
  await app.register(swagger, {
    openapi: {
      info: {
        title: "swarm-coordinator",
        version: "0.1.0",
        description:
          "Agents bid in sats for tasks in sealed-bid auctions; every lifecycle event lands in the event log.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, {
    routePrefix: "/docs",
    staticCSP: true,
    // Its static policy ends with upgrade-insecure-requests, which breaks /docs over plain HTTP
    // on a host name as it broke the dashboard; everything it loads is on this origin anyway.
    transformStaticCSP: (header) => header.replace(/\s*upgrade-insecure-requests;?/, ""),
  });
  // An upgrade that arrives during shutdown is answered 503 by Fastify, but its socket has left
  // HTTP's hands and would hold the server's close open for ever: end it once answered.
  let shuttingDown = false;
  app.server.on("upgrade", (_request: unknown, socket: Duplex) => {
    if (!shuttingDown) return;
    setImmediate(() => socket.end());
    setTimeout(() => socket.destroy(), 500).unref();
  });
  await app.register(websocket, {
    options: { maxPayload: 64 * 1024 },
    // On shutdown every client hears 1001 with what to do, rather than a bare close.
    preClose: async () => {
      shuttingDown = true;
      // Dashboard pages hear "service restart", which makes them reconnect and catch up.
      pages.hub?.closeAll(LIVE_CLOSE.SERVICE_RESTART, "server restarting; reconnecting");
      for (const socket of app.websocketServer.clients) {
        socket.close(STREAM_CLOSE.SHUTTING_DOWN, "server shutting down; reconnect with after_seq");
      }
      // A client that does not answer the close frame would hold shutdown for ws's 30 s close
      // timeout (the server's close waits for every client); after a short grace it is cut off.
      const clients = app.websocketServer.clients;
      for (let waited = 0; clients.size > 0 && waited < SOCKET_CLOSE_GRACE_MS; waited += 20) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      for (const socket of clients) socket.terminate();
      await new Promise<void>((resolve) => app.websocketServer.close(() => resolve()));
    },
  });

  const maxSockets = options.maxSockets ?? 2000;
  // Counted here rather than read from ws's client set, which still holds sockets that are
  // closing: those must not crowd out new arrivals.
  let admittedSockets = 0;
  app.decorate("admitSocket", (socket: WebSocket) => {
    if (admittedSockets < maxSockets) {
      admittedSockets += 1;
      socket.once("close", () => (admittedSockets -= 1));
      return true;
    }
    metrics.refusedWebsockets.inc();
    socket.close(
      LIVE_CLOSE.TRY_AGAIN_LATER,
      `the server holds its limit of ${maxSockets} websockets; retry later`,
    );
    return false;
  });

  await app.register(opsRoutes);
  await app.register(agentRoutes);
  await app.register(taskRoutes);
  await app.register(eventRoutes);
  await app.register(streamRoutes, { stream: { ...STREAM_DEFAULTS, ...options.stream } });
  await app.register(dashboard, {
    viewOpen: options.dashboardPublic ?? false,
    live: { ...LIVE_DEFAULTS, ...options.live },
    pages,
  });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  return app;
}
