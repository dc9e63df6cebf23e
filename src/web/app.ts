/**
 * buildApp(): the whole HTTP application as a Fastify instance, built from its parts. Tests
 * call it with `inject`; `server.ts` only reads configuration and listens.
 */
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
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
  type FastifyReply,
  type FastifyRequest,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from "fastify";
import type { FastifyRouteSchemaDef } from "fastify/types/schema.js";
import type { CoordinatorPort } from "../coordinator/port.js";
import { isSwarmError, SwarmError } from "../errors.js";
import type { EventLogPort, ServerStorePort } from "../storage/port.js";
import { serverStoreFor } from "../storage/server-store.js";
import { EventType } from "../event-log/event-types.js";
import type { Logger } from "../logger.js";
import { AuthFailureLimiter } from "./auth-failures.js";
import { bearerToken, guards, hashToken, resolveCaller, TokenStore, type Caller } from "./auth.js";
import { closeReason, installErrorHandling, sendError, toSwarmError } from "./errors.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { RequestLogController } from "./request-log.js";
import { agentRoutes } from "./routes/agents.js";
import { eventRoutes } from "./routes/events.js";
import { opsRoutes } from "./routes/ops.js";
import { STREAM_CLOSE, STREAM_DEFAULTS, streamRoutes, type StreamOptions } from "./routes/stream.js";
import { scheduleRoutes } from "./routes/schedules.js";
import { Scheduler } from "../coordinator/scheduler.js";
import { taskRoutes } from "./routes/tasks.js";
import { addSecurityHeaders } from "./security-headers.js";
import { dashboard, type DashboardPages } from "./dashboard/index.js";
import { readerOf, Visibility, type Reader } from "./visibility.js";
import { isWebsocketUpgrade, SameOriginGuard, type AllowedHosts } from "./same-origin.js";
import { LIVE_CLOSE, LIVE_DEFAULTS, type LiveOptions } from "./dashboard/live.js";
import type { DashboardSession } from "./dashboard/session.js";
import { agentSockets, CREDENTIALS_REVOKED, sessionSockets } from "./socket-clients.js";

export interface AppOptions {
  eventLog: EventLogPort;
  coordinator: CoordinatorPort;
  logger: Logger;
  /** Fire due schedules on a timer (the server does; tests call `app.scheduler.fireDue()`). */
  runSchedules?: boolean;
  /** SWARM_API_KEY: the operator's key. Unset: operator actions are open (the server listens on loopback only). */
  apiKey?: string;
  /** Largest request body, in bytes. Default 256 KiB. */
  bodyLimit?: number;
  /** Requests per minute per credential (or per IP without one); false turns limiting off. Default 1200. */
  rateLimitPerMinute?: number | false;
  /**
   * Expensive reads per minute per credential, apart from the general limit: text searches,
   * exports, summaries beyond an hour. False turns it off. Default 30.
   */
  expensiveRateLimitPerMinute?: number | false;
  stream?: Partial<StreamOptions>;
  live?: Partial<LiveOptions>;
  /** With a key set: whether the dashboard may be viewed without logging in. Default false. */
  dashboardPublic?: boolean;
  /** With a public dashboard: whether anonymous viewers see tool inputs, outputs and results. Default false. */
  dashboardPublicDetails?: boolean;
  /** Websockets held open at once; one more is closed at once with 1013 (try again later). Default 2000. */
  maxSockets?: number;
  /**
   * Host names this server answers to besides loopback ones (SWARM_ALLOWED_HOSTS, the address it
   * listens on); "any" turns the Host check off. Default: loopback only.
   */
  allowedHosts?: AllowedHosts;
  /** Failed authentications per client address per 15 minutes before it is answered 429; false: no limit. Default 30. */
  authFailureLimit?: number | false;
  /** Websockets one client (see socketClient) may hold at once, likewise. Default 64. */
  maxSocketsPerClient?: number;
  /** Process-wide metrics (CPU, memory, event loop) on /metrics; off in tests that build many apps. */
  defaultMetrics?: boolean;
  /**
   * SWARM_TRUST_PROXY: peers whose X-Forwarded-For/-Proto/-Host set `request.ip`, `.protocol`
   * and `.host`. Default false: the socket's own address and protocol, whatever the headers say.
   */
  trustProxy?: boolean | string[];
}

const AUTH_FAILURE_WINDOW_MS = 15 * 60_000;

/** How long shutdown waits for websocket clients to answer the close frame. */
const SOCKET_CLOSE_GRACE_MS = 1000;
/**
 * How long shutdown lets HTTP requests in flight finish before their connections are cut. Node
 * closes only the keep-alive connections idle at the moment of close; one busy then (or one a
 * browser opened ahead of its next request) would hold the close open until its client leaves.
 */
const HTTP_CLOSE_GRACE_MS = 3000;

export type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

declare module "fastify" {
  interface FastifyInstance {
    eventLog: EventLogPort;
    coordinator: CoordinatorPort;
    /** Tokens, Idempotency-Keys, dashboard sessions and secrets, on the event log's engine. */
    serverStore: ServerStorePort;
    /** Fires due schedules; runs on its own timer when the app was built with `runSchedules`. */
    scheduler: Scheduler;
    tokens: TokenStore;
    guard: ReturnType<typeof guards>;
    apiKey: string | undefined;
    metrics: Metrics;
    /** What each reader may see of events, tasks and bids (sealed bids, other agents' contents). */
    visibility: Visibility;
    /** The reader the calling credentials make (see visibility.ts). */
    readerOf: (request: FastifyRequest) => Reader;
    /** Wrong credentials per client address (the API's and the login form's). */
    authFailures: AuthFailureLimiter;
    /**
     * A preHandler that spends the caller's expensive-read budget when `isExpensive` says the
     * request is one (every request, without it), and refuses with 429 once it is spent.
     */
    expensiveRead: (
      isExpensive?: (request: FastifyRequest) => boolean,
    ) => (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /**
     * Call first in a websocket route: false when the socket was over the server's limit or
     * its client's (see socketClient) and is being closed.
     */
    admitSocket: (socket: WebSocket, request: FastifyRequest) => boolean;
    /** Close every websocket a client holds (see `agentSockets`, `sessionSockets`), saying why. */
    closeSockets: (client: string, reason: string) => void;
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

type ValidationErrors = ReturnType<typeof textAjv.compile>["errors"];

/**
 * A query string's unknown parameter, said with what the route does take. `additionalProperties`
 * is refused, never stripped (`removeAdditional: false` above): a filter silently dropped would
 * answer every event as if none had been asked for. errors.ts answers these with INVALID_FILTER.
 */
function describeUnknownParameters(errors: ValidationErrors, known: string[]): ValidationErrors {
  return errors?.map((error) =>
    error.keyword === "additionalProperties"
      ? {
          ...error,
          message:
            known.length === 0
              ? "is not a query parameter; this route takes none"
              : `is not a query parameter of this route, which takes ${known.join(", ")}`,
        }
      : error,
  );
}

/**
 * `event_type`, the Python-era name of `type`, becomes `type` here, once for every route that
 * takes both (the list, the export, the stream, the dashboard's events page and live tail), so
 * that handlers read one name. Both at once could mean "either" or "both": refused.
 */
function foldTypeAlias(data: unknown): ValidationErrors | undefined {
  if (typeof data !== "object" || data === null || !("event_type" in data)) return undefined;
  const query = data as Record<string, unknown>;
  if (query.type !== undefined) {
    return [
      {
        instancePath: "/event_type",
        schemaPath: "",
        keyword: "typeAlias",
        params: {},
        message: "is the Python-era name of type; give one of them, not both",
      },
    ];
  }
  query.type = query.event_type;
  delete query.event_type;
  return undefined;
}

function compileValidator({ schema, httpPart }: FastifyRouteSchemaDef<FastifySchema>) {
  if (httpPart === "body") return bodyAjv.compile(schema as object);
  const validate = textAjv.compile(schema as object);
  const properties = (schema as { properties?: Record<string, unknown> }).properties;
  const known = Object.keys(properties ?? {});
  const takesTypeAlias = httpPart === "querystring" && known.includes("event_type");
  // Ajv coerces "1e309" and "Infinity" to Infinity and then lets it past `maximum`; text never
  // means an infinite number here, so such a value is refused by name.
  const checked = (data: unknown): boolean => {
    const valid = validate(data);
    checked.errors =
      httpPart === "querystring" ? describeUnknownParameters(validate.errors, known) : validate.errors;
    const path = valid ? nonFinitePath(data) : undefined;
    if (path !== undefined) {
      checked.errors = [
        {
          instancePath: path,
          schemaPath: "",
          keyword: "type",
          params: {},
          message: "must be a finite number",
        },
      ];
      return false;
    }
    if (valid && takesTypeAlias) {
      const conflict = foldTypeAlias(data);
      if (conflict !== undefined) {
        checked.errors = conflict;
        return false;
      }
    }
    return valid;
  };
  checked.errors = validate.errors;
  return checked;
}

/** Whose budget a request spends: its agent's, the operator's, or its IP's without credentials. */
function rateLimitKey(request: FastifyRequest): string {
  if (request.caller.kind === "agent") return `agent:${request.caller.agentId}`;
  return request.caller.kind === "operator" ? "operator" : `ip:${request.ip}`;
}

export async function buildApp(options: AppOptions): Promise<App> {
  const loggerInstance: FastifyBaseLogger = options.logger;
  const app = Fastify({
    loggerInstance,
    // One line per request at debug, not two at info (see request-log.ts).
    logController: new RequestLogController(),
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

  const serverStore = serverStoreFor(options.eventLog);
  const tokens = new TokenStore(serverStore, options.eventLog.engine);
  const apiKeyHash = options.apiKey === undefined ? undefined : hashToken(options.apiKey);
  const metrics = createMetrics(options.eventLog, options.coordinator.store, {
    defaultMetrics: options.defaultMetrics ?? false,
    replica: options.coordinator.replica,
  });
  app.decorate("eventLog", options.eventLog);
  app.decorate("coordinator", options.coordinator);
  app.decorate("serverStore", serverStore);
  const scheduler = new Scheduler({
    coordinator: options.coordinator,
    store: serverStore,
    logger: options.logger,
  });
  app.decorate("scheduler", scheduler);
  if (options.runSchedules === true) scheduler.start();
  app.addHook("onClose", async () => scheduler.stop());
  app.decorate("tokens", tokens);
  app.decorate("guard", guards(options.apiKey));
  app.decorate("apiKey", options.apiKey);
  app.decorate("metrics", metrics);
  app.decorate("visibility", new Visibility(options.coordinator));
  const keyless = options.apiKey === undefined;
  app.decorate("readerOf", (request: FastifyRequest) => readerOf(request.caller, keyless));
  app.decorateRequest("caller", null as never);
  app.addHook("onClose", async () => metrics.stop());
  // Bids are judged sealed or not by the open rounds: on PostgreSQL those follow the log, and
  // must be following it before the first reader is served.
  app.addHook("onReady", async () => options.coordinator.followLog?.());

  // Filled in when the dashboard registers: its HTML not-found page and its live hub.
  const pages: DashboardPages = {};
  installErrorHandling(app, (request, reply) => pages.notFound?.(request, reply));

  // Other sites' pages and names not ours are refused before anything else is looked at. A
  // websocket upgrade refused in onRequest keeps its socket open (see below), so upgrades are
  // checked once routed, before their guards.
  const sameOrigin = new SameOriginGuard(options.allowedHosts ?? []);
  app.addHook("onRequest", async (request) => {
    if (!isWebsocketUpgrade(request)) sameOrigin.check(request);
  });
  app.addHook("preHandler", async (request) => {
    if (isWebsocketUpgrade(request)) sameOrigin.check(request);
  });

  const authFailures = new AuthFailureLimiter(
    { limit: options.authFailureLimit ?? 30, windowMs: AUTH_FAILURE_WINDOW_MS },
    () => options.eventLog.clock().getTime(),
  );
  app.decorate("authFailures", authFailures);

  // Who is calling, settled before anything else (rate limiting keys on it).
  app.addHook("onRequest", async (request) => {
    try {
      let token = bearerToken(request);
      if (token === undefined && isWebsocketUpgrade(request) && request.url.startsWith("/api/stream")) {
        // Browsers cannot set headers on a WebSocket; the stream also takes ?token=.
        const query = request.query as { token?: unknown };
        if (typeof query.token === "string") token = query.token;
      }
      let caller: Caller;
      try {
        caller = await resolveCaller(token, { apiKeyHash, tokens });
      } catch (refused) {
        // Wrong credentials: counted per address, and refused with 429 once too many failed.
        // Not a request another site's page sent (it is refused anyway): a page must not be able
        // to spend this address's allowance and lock the operator out.
        if (isSwarmError(refused, "UNAUTHORIZED") && !sameOrigin.isForeign(request)) {
          authFailures.check(request.ip);
          authFailures.fail(request.ip);
        }
        throw refused;
      }
      // From an address that used up its failures even the right key waits (see auth-failures.ts).
      if (caller.kind === "operator") authFailures.check(request.ip);
      request.caller = caller;
    } catch (error) {
      // A websocket upgrade refused this early keeps its socket open (a @fastify/websocket
      // quirk); the route's guard refuses it later, which closes it.
      if (!(error instanceof SwarmError) || !isWebsocketUpgrade(request)) throw error;
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

  addSecurityHeaders(app);
  const expensivePerMinute = options.expensiveRateLimitPerMinute ?? 30;
  if (options.rateLimitPerMinute !== false || expensivePerMinute !== false) {
    await app.register(rateLimit, {
      // With the general limit off, the plugin is still what counts expensive reads.
      global: options.rateLimitPerMinute !== false,
      max: options.rateLimitPerMinute || 1200,
      timeWindow: 60_000,
      keyGenerator: rateLimitKey,
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
  // Its own budget, much lower than the general one: a few of these can hold the event loop
  // for as long as thousands of ordinary requests.
  const checkExpensive =
    expensivePerMinute === false
      ? undefined
      : app.createRateLimit({ max: expensivePerMinute, timeWindow: 60_000, keyGenerator: rateLimitKey });
  app.decorate("expensiveRead", (isExpensive?: (request: FastifyRequest) => boolean) => {
    return async (request: FastifyRequest, reply: FastifyReply) => {
      if (checkExpensive === undefined || (isExpensive !== undefined && !isExpensive(request))) return;
      const limit = await checkExpensive(request);
      if (limit.isAllowed || !limit.isExceeded) return;
      reply.header("retry-after", String(limit.ttlInSeconds));
      throw new SwarmError(
        "RATE_LIMITED",
        `expensive-read limit of ${limit.max} per minute reached (text searches, exports, summaries beyond an hour); retry in ${limit.ttlInSeconds} s`,
        { limit: "expensive_reads", retry_after: `${limit.ttlInSeconds} seconds` },
      );
    };
  });
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
      const server = app.server;
      const sweep = setInterval(() => server.closeIdleConnections(), 100);
      const cutOff = setTimeout(() => server.closeAllConnections(), HTTP_CLOSE_GRACE_MS);
      sweep.unref();
      cutOff.unref();
      server.once("close", () => {
        clearInterval(sweep);
        clearTimeout(cutOff);
      });
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
  const maxSocketsPerClient = options.maxSocketsPerClient ?? 64;
  // Counted here rather than read from ws's client set, which still holds sockets that are
  // closing: those must not crowd out new arrivals. A client's count is dropped at zero.
  let admittedSockets = 0;
  const socketsByClient = new Map<string, Set<WebSocket>>();
  /**
   * Whom a websocket counts against: an agent, the operator key, one dashboard login (its
   * session, once verified), or else the caller's IP address.
   */
  const socketClient = (request: FastifyRequest): string => {
    const { caller } = request;
    if (caller.kind === "agent") return agentSockets(caller.agentId);
    if (caller.kind === "operator") return "operator";
    // Set only on the dashboard's own routes; the stream never sees a session.
    const session = request.dashboardSession as DashboardSession | undefined;
    if (session?.sessionId !== undefined) return sessionSockets(session.sessionId);
    return `ip:${request.ip}`;
  };
  const refuseSocket = (socket: WebSocket, limit: "client" | "server", reason: string) => {
    metrics.refusedWebsockets.inc({ limit });
    socket.close(LIVE_CLOSE.TRY_AGAIN_LATER, reason);
    return false;
  };
  app.decorate("admitSocket", (socket: WebSocket, request: FastifyRequest) => {
    const client = socketClient(request);
    const held = socketsByClient.get(client) ?? new Set<WebSocket>();
    if (held.size >= maxSocketsPerClient) {
      return refuseSocket(
        socket,
        "client",
        `you hold the limit of ${maxSocketsPerClient} websockets per client (SWARM_MAX_SOCKETS_PER_CLIENT); close one`,
      );
    }
    if (admittedSockets >= maxSockets) {
      return refuseSocket(
        socket,
        "server",
        `the server holds its limit of ${maxSockets} websockets (SWARM_MAX_SOCKETS); retry later`,
      );
    }
    admittedSockets += 1;
    held.add(socket);
    socketsByClient.set(client, held);
    socket.once("close", () => {
      admittedSockets -= 1;
      held.delete(socket);
      if (held.size === 0 && socketsByClient.get(client) === held) socketsByClient.delete(client);
    });
    return true;
  });
  app.decorate("closeSockets", (client: string, reason: string) => {
    for (const socket of socketsByClient.get(client) ?? []) {
      socket.close(CREDENTIALS_REVOKED, closeReason(reason));
      // A client that does not answer the close frame is not kept listening meanwhile.
      setTimeout(() => socket.terminate(), SOCKET_CLOSE_GRACE_MS).unref();
    }
  });
  // A revoked token stops working here once the event that says so arrives, and the sockets
  // opened with it are closed. Heard from this process's own commits today; a replica that
  // tails the log (the cluster) hears every replica's the same way.
  const unsubscribeRevocations = options.eventLog.subscribe(
    (event) => {
      if (event.agent_id === null) return;
      tokens.forget(event.agent_id);
      app.closeSockets(
        agentSockets(event.agent_id),
        event.event_type === EventType.AGENT_LEFT
          ? "credentials revoked: the agent has deregistered"
          : "credentials revoked: the agent's token was rotated; reconnect with the new one",
      );
    },
    { types: [EventType.AGENT_LEFT, EventType.AGENT_TOKEN_ROTATED] },
  );
  app.addHook("onClose", async () => unsubscribeRevocations());

  await app.register(opsRoutes);
  await app.register(agentRoutes);
  await app.register(taskRoutes);
  await app.register(scheduleRoutes);
  await app.register(eventRoutes);
  await app.register(streamRoutes, { stream: { ...STREAM_DEFAULTS, ...options.stream } });
  await app.register(dashboard, {
    viewOpen: options.dashboardPublic ?? false,
    publicDetails: options.dashboardPublicDetails ?? false,
    live: { ...LIVE_DEFAULTS, ...options.live },
    pages,
  });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  return app;
}
