/**
 * The dashboard: server-rendered pages (nunjucks through @fastify/view), made live by one
 * websocket per page (see live.ts). Registered as an encapsulated plugin, so its form parser,
 * CSRF check and HTML error pages stay out of the JSON API.
 */
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import cookie from "@fastify/cookie";
import csrf from "@fastify/csrf-protection";
import formbody from "@fastify/formbody";
import fastifyStatic from "@fastify/static";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import view from "@fastify/view";
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import nunjucks, { type Environment } from "nunjucks";
import { SwarmError } from "../../errors.js";
import { toSwarmError } from "../errors.js";
import { OPERATOR } from "../visibility.js";
import { DashboardModel, MinuteCounter } from "./model.js";
import { configureTemplates, Renderer, VIEWS_DIR, type DashboardRenderers } from "./render.js";
import { LiveHub, type LiveOptions } from "./live.js";
import { pageRoutes } from "./pages.js";
import { csrfUserInfo, SessionKeeper, type DashboardSession } from "./session.js";

export interface DashboardOptions {
  /** With a key set: whether viewing is open without logging in. */
  viewOpen: boolean;
  /** Whether anonymous viewers of a public dashboard see tool inputs, outputs and results. */
  publicDetails: boolean;
  live: LiveOptions;
  /** Filled in at registration: how the app's not-found handler answers a browser. */
  pages: DashboardPages;
}

export interface DashboardPages {
  notFound?: (request: FastifyRequest, reply: FastifyReply) => FastifyReply;
  hub?: LiveHub;
}

type DashboardReader = typeof OPERATOR | { kind: "public"; details: boolean };

declare module "fastify" {
  interface FastifyRequest {
    dashboardSession: DashboardSession;
  }
}

const PUBLIC_DIR = fileURLToPath(new URL("../../../public", import.meta.url));
const requireFromHere = createRequire(import.meta.url);
/**
 * htmx and its websocket extension, served from the installed packages at their pinned versions.
 * A Map, not an object literal: a name from the URL such as `__proto__` or `toString` must find
 * nothing rather than something inherited.
 */
const VENDOR_FILES = new Map([
  ["htmx.min.js", requireFromHere.resolve("htmx.org/dist/htmx.min.js")],
  ["htmx-ext-ws.min.js", requireFromHere.resolve("htmx-ext-ws/dist/ws.min.js")],
]);

/** Every template under `root`, named as pages and partials name them (`partials/feed.njk`). */
function templateNames(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".njk"))
    .map((name) => name.split(path.sep).join("/"));
}

export const dashboard: FastifyPluginAsyncTypebox<DashboardOptions> = async (app, options) => {
  const { eventLog, coordinator, serverStore } = app;
  const sessions = new SessionKeeper(app.apiKey, options.viewOpen, serverStore, eventLog.clock);
  let env: Environment | undefined;

  await app.register(cookie);
  await app.register(formbody, { bodyLimit: 64 * 1024 });
  await app.register(csrf, {
    cookieOpts: { path: "/", sameSite: "strict", httpOnly: true },
    // A token is good only for the login it was made for: a sibling origin (another port, a
    // subdomain) can plant the _csrf cookie, but it cannot know the session id inside the token.
    getUserInfo: (request) => csrfUserInfo(request.dashboardSession),
    csrfOpts: { hmacKey: await serverStore.serverSecret("csrf-hmac-key", eventLog.clock()) },
  });
  await app.register(view, {
    engine: { nunjucks },
    root: VIEWS_DIR,
    options: {
      autoescape: true,
      throwOnUndefined: false,
      onConfigure: (configured: Environment) => {
        configureTemplates(configured, eventLog.clock);
        env = configured;
      },
    },
  });
  if (env === undefined) throw new Error("@fastify/view did not configure nunjucks");
  const templates: Environment = env;
  // Compile every template now: otherwise the first page of each kind compiles its templates on
  // the event loop while its request waits (the overview's first answer held it for 110 ms).
  for (const name of templateNames(VIEWS_DIR)) templates.getTemplate(name, true);
  const minuteCounts = new MinuteCounter(await eventLog.getMinuteCounts(60), eventLog.clock);
  const rendererFor = (reader: DashboardReader) =>
    new Renderer(
      templates,
      new DashboardModel(coordinator, eventLog, eventLog.clock, minuteCounts, {
        visibility: app.visibility,
        reader,
      }),
    );
  // The operator sees everything; an anonymous viewer of a public dashboard sees sealed bids
  // sealed and, unless allowed, no tool contents or results (see visibility.ts).
  const renderers: DashboardRenderers = {
    operator: rendererFor(OPERATOR),
    public: rendererFor({ kind: "public", details: options.publicDetails }),
  };
  const hub = new LiveHub(eventLog, renderers.operator, options.live, app.log, app.metrics);
  await hub.start();
  options.pages.hub = hub;
  app.addHook("onClose", async () => hub.stop());

  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    prefix: "/static/",
    maxAge: "1h",
  });
  app.get("/vendor/:file", { schema: { hide: true } }, async (request, reply) => {
    const { file } = request.params as { file: string };
    const location = VENDOR_FILES.get(file);
    if (location === undefined) throw new SwarmError("NOT_FOUND", `no asset ${file}`);
    return reply.sendFile(path.basename(location), path.dirname(location), { maxAge: "1d" });
  });

  app.decorateRequest("dashboardSession", null as never);
  app.addHook("onRequest", async (request) => {
    request.dashboardSession = await sessions.sessionOf(request);
  });
  // Filter forms send empty fields for filters left blank; blank means "no filter".
  app.addHook("preValidation", async (request) => {
    if (request.method !== "GET" || request.query === null || typeof request.query !== "object") return;
    const query = request.query as Record<string, unknown>;
    for (const [key, value] of Object.entries(query)) if (value === "") delete query[key];
  });

  const renderError = (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    heading: string,
    message: string,
  ) =>
    reply
      .code(status)
      .type("text/html; charset=utf-8")
      .send(
        env?.render("pages/error.njk", {
          title: heading,
          heading,
          message,
          session: request.dashboardSession ?? sessions.sessionOf(request),
          path: request.url,
        }),
      );
  options.pages.notFound = (request, reply) =>
    renderError(request, reply, 404, "Not found", `There is no page at ${request.url.split("?")[0] ?? ""}.`);

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error.code === "FST_CSRF_INVALID_TOKEN" || error.code === "FST_CSRF_MISSING_SECRET") {
      return renderError(
        request,
        reply,
        403,
        "This form has expired",
        "The form was not sent from this dashboard, or it is too old. Go back, reload the page and try again.",
      );
    }
    const known = toSwarmError(error);
    if (known !== undefined && known.status < 500) {
      return renderError(request, reply, known.status, headingFor(known), known.message);
    }
    request.log.error({ err: error, reqId: request.id }, "dashboard page failed");
    return renderError(
      request,
      reply,
      500,
      "Something went wrong",
      `The page failed; quote request id ${request.id}.`,
    );
  });

  await app.register(pageRoutes, { sessions, renderers, hub });
};

function headingFor(error: SwarmError): string {
  if (error.status === 404) return "Not found";
  if (error.status === 401 || error.status === 403) return "Not allowed";
  return "That did not work";
}
