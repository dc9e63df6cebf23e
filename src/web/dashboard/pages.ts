/**
 * The dashboard's pages and forms. Handlers build a context from the model and render a page
 * template; the same partials are what live pushes render (live-views.ts).
 */
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { FastifyReply, FastifyRequest } from "fastify";
import { Type, type Static, type TProperties } from "typebox";
import { isSwarmError, SwarmError } from "../../errors.js";
import { KNOWN_EVENT_TYPES } from "../../event-log/event-types.js";
import type { EventFilter, EventPage } from "../../event-log/types.js";
import { normalizeFilter } from "../../event-log/validate.js";
import { TASK_STATUSES, type Task } from "../../coordinator/types.js";
import { CREDENTIALS_REVOKED, sessionSockets } from "../socket-clients.js";
import { closeReason } from "../errors.js";
import { isTextSearch, sendExport, toFilter } from "../routes/events.js";
import { scheduleActions } from "../routes/schedules.js";
import { EventFilterQuery, IdParams, SeqQuery, StrictQuery, TaskStatusSchema } from "../schemas.js";
import type { LiveHub } from "./live.js";
import { liveView, TAIL_CAP, type LiveSpec } from "./live-views.js";
import { truncate } from "./format.js";
import { BOARD_CURSOR_PATTERN, boardCursorText, FEED_CAP, PAGE_SIZE, parseBoardCursor } from "./model.js";
import type { DashboardRenderers, Renderer } from "./render.js";
import { csrfUserInfo, type SessionKeeper } from "./session.js";

const EVENT_FILTER_FIELDS = ["type", "source", "task_id", "agent_id", "since", "until", "q"] as const;

/**
 * A page's query string: what the page takes, and htmx's own cache-busting parameter (sent on
 * htmx GETs when `getCacheBusterParam` is configured), and nothing else. A parameter the page
 * does not know is refused with a 400 page naming it: a filter it silently ignored would show
 * every event as if it matched.
 */
const PageQuery = <T extends TProperties>(properties: T) =>
  StrictQuery({ ...properties, "org.htmx.cache-buster": Type.Optional(Type.String({ maxLength: 200 })) });

const EventsPageQuery = PageQuery({
  ...EventFilterQuery.properties,
  before_seq: SeqQuery(1),
  after_seq: SeqQuery(),
  live: Type.Optional(Type.Literal("1")),
});

/** Where the agents page continues: the last agent of the page before (model.ts, boardCursorText). */
const AgentCursor = Type.String({ pattern: BOARD_CURSOR_PATTERN, description: "next page's cursor" });

const LiveQuery = PageQuery({
  view: Type.Union([
    Type.Literal("overview"),
    Type.Literal("tasks"),
    Type.Literal("task"),
    Type.Literal("agents"),
    Type.Literal("agent"),
    Type.Literal("events"),
  ]),
  status: Type.Optional(TaskStatusSchema),
  before: SeqQuery(1),
  after: Type.Optional(AgentCursor),
  paged: Type.Optional(Type.Literal("1")),
  ...EventFilterQuery.properties,
  after_seq: SeqQuery(),
});

const PostTaskForm = Type.Object({
  _csrf: Type.Optional(Type.String()),
  description: Type.Optional(Type.String()),
  required_capabilities: Type.Optional(Type.String()),
  auction_seconds: Type.Optional(Type.String()),
  max_bid_sats: Type.Optional(Type.String()),
});
type PostTaskFields = Static<typeof PostTaskForm>;

const AssignForm = Type.Object({
  _csrf: Type.Optional(Type.String()),
  agent_id: Type.String({ minLength: 1, maxLength: 200 }),
});

interface FormState {
  /** Shown as the window's placeholder: what a task gets when the field is left empty. */
  defaultAuctionSeconds?: number;
  values: Record<string, string>;
  errors: Record<string, string>;
  posted?: { id: string; description: string };
}

/** The form's fields as a PostTask command, or the problems with them, by field. */
function readTaskForm(body: PostTaskFields) {
  const values = {
    description: body.description ?? "",
    required_capabilities: body.required_capabilities ?? "",
    auction_seconds: body.auction_seconds ?? "",
    max_bid_sats: body.max_bid_sats ?? "",
  };
  const errors: Record<string, string> = {};
  const description = values.description.trim();
  if (description === "") errors.description = "Say what the task is.";
  const capabilities = values.required_capabilities
    .split(",")
    .map((capability) => capability.trim())
    .filter((capability) => capability !== "");
  let auctionMs: number | undefined;
  if (values.auction_seconds.trim() !== "") {
    const seconds = Number(values.auction_seconds);
    if (!Number.isFinite(seconds) || seconds < 0.1 || seconds > 600) {
      errors.auction_seconds = "The auction window is 0.1 to 600 seconds.";
    } else auctionMs = Math.round(seconds * 1000);
  }
  let maxBid: number | undefined;
  if (values.max_bid_sats.trim() !== "") {
    maxBid = Number(values.max_bid_sats);
    if (!Number.isInteger(maxBid) || maxBid < 1)
      errors.max_bid_sats = "The max bid is a whole number of sats, at least 1.";
  }
  const command = {
    type: "PostTask" as const,
    description,
    required_capabilities: capabilities,
    ...(auctionMs !== undefined ? { auction_ms: auctionMs } : {}),
    ...(maxBid !== undefined ? { max_bid_sats: maxBid } : {}),
  };
  return { values, errors, command };
}

/** The coordinator's refusal, on the form field it names. */
function formFieldOf(error: SwarmError): string {
  const field = (error.details as { field?: unknown } | undefined)?.field;
  const name = typeof field === "string" ? /^(?:body\.)?([a-z_]+)/.exec(field)?.[1] : undefined;
  if (name === "auction_ms") return "auction_seconds";
  return name !== undefined && ["description", "required_capabilities", "max_bid_sats"].includes(name)
    ? name
    : "_form";
}

/** Any origin will do: only whether `next` stays on it matters. */
const NEXT_ORIGIN = "http://dashboard.invalid";
// C0 and C1 controls, DEL, and the line and paragraph separators: browsers strip some of these
// from URLs (so "/\t/evil.example" means "//evil.example"), and a CR or LF cannot be sent in a
// Location header at all.
// eslint-disable-next-line no-control-regex
const URL_CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u;

/**
 * Where to go after logging in: a path on this site, or "/". `next` is resolved the way a
 * browser resolves a Location header (WHATWG URL: backslashes are slashes, "//host" is another
 * site), and only a result on the same origin is kept, as its path, query and fragment, which
 * come back percent-encoded and so always fit in a header.
 */
function safeNext(next: unknown): string {
  if (typeof next !== "string" || !next.startsWith("/") || URL_CONTROL_CHARACTERS.test(next)) return "/";
  const resolved = URL.parse(next, NEXT_ORIGIN);
  if (resolved === null || resolved.origin !== NEXT_ORIGIN) return "/";
  return `${resolved.pathname}${resolved.search}${resolved.hash}`;
}

export const pageRoutes: FastifyPluginAsyncTypebox<{
  sessions: SessionKeeper;
  renderers: DashboardRenderers;
  hub: LiveHub;
}> = async (app, { sessions, renderers, hub }) => {
  const { eventLog, coordinator } = app;
  /** Pages render for their viewer: the operator, or an anonymous viewer of a public dashboard. */
  const rendererOf = (request: FastifyRequest): Renderer =>
    request.dashboardSession.operator ? renderers.operator : renderers.public;
  const modelOf = (request: FastifyRequest) => rendererOf(request).model;
  // The plugin's check reads no `this`; bound anyway so a hook holding it cannot lose it.
  const checkCsrf = app.csrfProtection.bind(app);

  const canView = async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.dashboardSession.canView) return;
    if (request.headers.upgrade !== undefined)
      throw new SwarmError("UNAUTHORIZED", "log in to view the dashboard");
    return reply.redirect(`/login?next=${encodeURIComponent(request.url)}`, 303);
  };
  const canAct = async (request: FastifyRequest) => {
    if (!request.dashboardSession.canAct) {
      throw new SwarmError("UNAUTHORIZED", "this needs the operator key; log in first");
    }
  };

  /**
   * What every page's layout needs. `live` is the page's websocket, if it shows live data. Await
   * it before reading what the page shows: its seq is where the live catch-up starts, so it must
   * not be newer than anything the page read.
   */
  const page = async (
    request: FastifyRequest,
    reply: FastifyReply,
    nav: string,
    title: string,
    live?: LiveSpec,
  ) => ({
    nav,
    title,
    path: request.url,
    session: request.dashboardSession,
    csrf: reply.generateCsrf({ userInfo: csrfUserInfo(request.dashboardSession) }),
    live: live === undefined ? undefined : liveUrl(live),
    seq: await eventLog.latestSeq(),
  });

  const taskForm = (form: Partial<FormState> = {}): FormState => ({
    defaultAuctionSeconds: coordinator.rules.defaultAuctionMs / 1000,
    values: { auction_seconds: "", ...form.values },
    errors: form.errors ?? {},
    ...(form.posted !== undefined ? { posted: form.posted } : {}),
  });

  const overview = async (request: FastifyRequest, reply: FastifyReply, form: FormState) => {
    const layout = await page(request, reply, "overview", "Overview", { view: "overview" });
    return reply.view("pages/overview.njk", {
      ...layout,
      ...(await rendererOf(request).overviewSummaryContext()),
      rows: await modelOf(request).recentEvents({}, FEED_CAP),
      cap: FEED_CAP,
      form,
    });
  };

  const tasksPage = async (
    request: FastifyRequest,
    reply: FastifyReply,
    filter: { status?: (typeof TASK_STATUSES)[number]; before?: number },
    form: FormState,
  ) => {
    const layout = await page(request, reply, "tasks", "Tasks", { view: "tasks", ...filter });
    return reply.view("pages/tasks.njk", {
      ...layout,
      ...(await modelOf(request).tasks(filter)),
      filter,
      statuses: TASK_STATUSES,
      form,
    });
  };

  app.get("/", { preHandler: canView, schema: { hide: true } }, async (request, reply) =>
    overview(request, reply, taskForm()),
  );

  app.get(
    "/tasks",
    {
      preHandler: canView,
      schema: {
        hide: true,
        querystring: PageQuery({
          status: Type.Optional(TaskStatusSchema),
          before: SeqQuery(1),
        }),
      },
    },
    async (request, reply) =>
      tasksPage(request, reply, { status: request.query.status, before: request.query.before }, taskForm()),
  );

  app.post(
    "/tasks",
    { preHandler: [checkCsrf, canAct], schema: { hide: true, body: PostTaskForm } },
    async (request, reply) => {
      const isHtmx = request.headers["hx-request"] === "true";
      const { values, errors, command } = readTaskForm(request.body);
      const refuse = async (form: FormState) => {
        reply.code(422);
        if (isHtmx)
          return reply.view("partials/post-task-form.njk", {
            ...(await page(request, reply, "tasks", "Tasks")),
            form,
          });
        return tasksPage(request, reply, {}, form);
      };
      if (Object.keys(errors).length > 0) return refuse(taskForm({ values, errors }));
      try {
        const { task } = await coordinator.submit(command);
        if (task === undefined) throw new Error("PostTask returned no task");
        if (!isHtmx) return reply.redirect(`/tasks/${encodeURIComponent(task.id)}`, 303);
        return reply.code(201).view("partials/post-task-form.njk", {
          ...(await page(request, reply, "tasks", "Tasks")),
          form: taskForm({ posted: { id: task.id, description: task.description } }),
        });
      } catch (error) {
        if (!isSwarmError(error) || error.status >= 500) throw error;
        return refuse(taskForm({ values, errors: { [formFieldOf(error)]: error.message } }));
      }
    },
  );

  const requireTask = async (id: string) => {
    const task = await coordinator.getTask(id);
    if (task === undefined) throw new SwarmError("TASK_NOT_FOUND", `There is no task ${id}.`);
    return task;
  };

  app.get(
    "/tasks/:id",
    {
      preHandler: canView,
      schema: {
        hide: true,
        params: IdParams,
        // A window of the timeline: the newest by default, or those before or after a seq.
        querystring: Type.Object({ before_seq: SeqQuery(1), after_seq: SeqQuery() }),
      },
    },
    async (request, reply) => {
      const { before_seq, after_seq } = request.query;
      // As the model decides it (model.ts, timeline): a window reached by a cursor does not grow live.
      const paged = before_seq !== undefined || after_seq !== undefined;
      const live: LiveSpec = { view: "task", task_id: request.params.id, ...(paged ? { paged: true } : {}) };
      const layout = await page(request, reply, "tasks", "", live);
      const task = await requireTask(request.params.id);
      const timeline = await modelOf(request).timeline(
        task.id,
        after_seq !== undefined ? { after_seq } : { before_seq },
      );
      return reply.view("pages/task.njk", {
        ...layout,
        title: truncate(task.description, 60),
        ...(await rendererOf(request).taskDetailContext(task)),
        timeline,
        taskId: task.id,
        assignable: task.status === "bidding" ? await assignableAgents(task) : [],
      });
    },
  );

  app.post(
    "/tasks/:id/cancel",
    { preHandler: [checkCsrf, canAct], schema: { hide: true, params: IdParams } },
    async (request, reply) => {
      const task = await requireTask(request.params.id);
      await coordinator.submit({
        type: "CancelTask",
        task_id: task.id,
        reason: "cancelled from the dashboard",
      });
      return reply.redirect(`/tasks/${encodeURIComponent(task.id)}`, 303);
    },
  );

  /** The agents an operator could hand the task to now: online, capable, with room (the first 50). */
  const assignableAgents = async (task: Task) =>
    (await coordinator.listAgents())
      .filter(
        (agent) =>
          agent.left_at === null &&
          agent.status === "idle" &&
          task.required_capabilities.every((capability) => agent.capabilities.includes(capability)),
      )
      .slice(0, 50);

  app.post(
    "/tasks/:id/retry",
    { preHandler: [checkCsrf, canAct], schema: { hide: true, params: IdParams } },
    async (request, reply) => {
      const task = await requireTask(request.params.id);
      const result = await coordinator.submit({ type: "RetryTask", task_id: task.id });
      return reply.redirect(`/tasks/${encodeURIComponent(result.task!.id)}`, 303);
    },
  );

  app.post(
    "/tasks/:id/assign",
    {
      preHandler: [checkCsrf, canAct],
      schema: { hide: true, params: IdParams, body: AssignForm },
    },
    async (request, reply) => {
      const task = await requireTask(request.params.id);
      await coordinator.submit({
        type: "AssignTask",
        task_id: task.id,
        agent_id: request.body.agent_id.trim(),
      });
      return reply.redirect(`/tasks/${encodeURIComponent(task.id)}`, 303);
    },
  );

  const schedules = scheduleActions(app);
  app.get("/schedules", { preHandler: canView, schema: { hide: true } }, async (request, reply) => {
    const layout = await page(request, reply, "schedules", "Schedules");
    return reply.view("pages/schedules.njk", { ...layout, schedules: await app.serverStore.listSchedules() });
  });
  for (const action of ["pause", "resume", "delete"] as const) {
    app.post(
      `/schedules/:id/${action}`,
      { preHandler: [checkCsrf, canAct], schema: { hide: true, params: IdParams } },
      async (request, reply) => {
        if (action === "delete") await schedules.remove(request.params.id);
        else await schedules.setPaused(request.params.id, action === "pause");
        return reply.redirect("/schedules", 303);
      },
    );
  }

  app.get(
    "/agents",
    {
      preHandler: canView,
      schema: { hide: true, querystring: Type.Object({ after: Type.Optional(AgentCursor) }) },
    },
    async (request, reply) => {
      const after = request.query.after === undefined ? undefined : parseBoardCursor(request.query.after);
      const layout = await page(request, reply, "agents", "Agents", {
        view: "agents",
        ...(after ? { after } : {}),
      });
      return reply.view("pages/agents.njk", {
        ...layout,
        ...(await modelOf(request).agents({ after, includeStats: true })),
        after,
        pageSize: PAGE_SIZE,
      });
    },
  );

  app.get(
    "/agents/:id",
    { preHandler: canView, schema: { hide: true, params: IdParams } },
    async (request, reply) => {
      const layout = await page(request, reply, "agents", "", { view: "agent", agent_id: request.params.id });
      const agent = await coordinator.getAgent(request.params.id);
      if (agent === undefined)
        throw new SwarmError("AGENT_NOT_FOUND", `There is no agent ${request.params.id}.`);
      return reply.view("pages/agent.njk", {
        ...layout,
        title: agent.name,
        detail: await modelOf(request).agentDetail(agent),
        events: await modelOf(request).recentEvents({ agent_id: agent.id }, PAGE_SIZE),
        cap: TAIL_CAP,
      });
    },
  );

  app.get(
    "/events",
    {
      preHandler: [canView, app.expensiveRead(isTextSearch)],
      schema: { hide: true, querystring: EventsPageQuery },
    },
    async (request, reply) => {
      const query = request.query;
      const filter = toFilter(query);
      const filterParams = new URLSearchParams();
      for (const field of EVENT_FILTER_FIELDS) {
        const value = query[field];
        for (const one of Array.isArray(value) ? value : value === undefined ? [] : [value])
          filterParams.append(field, one);
      }
      const link = (extra: Record<string, string | number>) => {
        const params = new URLSearchParams(filterParams);
        for (const [key, value] of Object.entries(extra)) params.set(key, String(value));
        const text = params.toString();
        return text === "" ? "/events" : `/events?${text}`;
      };
      const canTail = query.before_seq === undefined && query.after_seq === undefined;
      let problem: string | undefined;
      let result: EventPage = { events: [], next_cursor: null };
      const model = modelOf(request);
      const tailing = query.live === "1" && canTail;
      const layout = await page(
        request,
        reply,
        "events",
        "Events",
        tailing ? { view: "events", filter } : undefined,
      );
      try {
        result =
          query.after_seq !== undefined
            ? await model.listEventsAsync({
                ...filter,
                after_seq: query.after_seq,
                order: "asc",
                limit: PAGE_SIZE,
              })
            : await model.listEventsAsync({
                ...filter,
                before_seq: query.before_seq,
                order: "desc",
                limit: PAGE_SIZE,
              });
      } catch (error) {
        if (!isSwarmError(error, "INVALID_FILTER")) throw error;
        problem = error.message;
        reply.code(400);
      }
      const events = query.after_seq !== undefined ? [...result.events].reverse() : result.events;
      const newest = events[0]?.seq;
      const oldest = events.at(-1)?.seq;
      const hasOlder =
        query.after_seq !== undefined ? oldest !== undefined && oldest > 1 : result.next_cursor !== null;
      const hasNewer =
        query.after_seq !== undefined ? result.next_cursor !== null : query.before_seq !== undefined;
      return reply.view("pages/events.njk", {
        ...layout,
        ...(problem !== undefined ? { live: undefined } : {}),
        query,
        filtered: filterParams.size > 0,
        knownTypes: KNOWN_EVENT_TYPES,
        problem,
        rows: await model.eventRows(events),
        cap: tailing && problem === undefined ? TAIL_CAP : PAGE_SIZE,
        summary: model.typeCounts(),
        canTail,
        links: {
          liveOn: link({ live: "1" }),
          liveOff: link({}),
          newest: canTail ? undefined : link({}),
          older: hasOlder && oldest !== undefined ? link({ before_seq: oldest }) : undefined,
          newer: hasNewer && newest !== undefined ? link({ after_seq: newest }) : undefined,
          ndjson: `/events/export?${new URLSearchParams([...filterParams, ["format", "ndjson"]]).toString()}`,
          csv: `/events/export?${new URLSearchParams([...filterParams, ["format", "csv"]]).toString()}`,
        },
      });
    },
  );

  app.get(
    "/events/export",
    {
      preHandler: [canView, app.expensiveRead()],
      schema: {
        hide: true,
        querystring: PageQuery({
          ...EventFilterQuery.properties,
          format: Type.Optional(Type.Union([Type.Literal("ndjson"), Type.Literal("csv")])),
        }),
      },
    },
    async (request, reply) => {
      const model = modelOf(request);
      const filter = toFilter(request.query);
      model.checkFilter(filter);
      return sendExport(reply, eventLog, filter, request.query.format ?? "ndjson", (events) =>
        model.visibleEvents(events),
      );
    },
  );

  app.get(
    "/login",
    {
      schema: {
        hide: true,
        querystring: Type.Object({ next: Type.Optional(Type.String({ maxLength: 2000 })) }),
      },
    },
    async (request, reply) => {
      if (!request.dashboardSession.loginRequired) return reply.redirect("/", 303);
      return reply.view("pages/login.njk", {
        ...(await page(request, reply, "", "Log in")),
        next: safeNext(request.query.next),
      });
    },
  );

  app.post(
    "/login",
    {
      preHandler: checkCsrf,
      schema: {
        hide: true,
        body: Type.Object({
          _csrf: Type.Optional(Type.String()),
          key: Type.String({ maxLength: 1000 }),
          next: Type.Optional(Type.String({ maxLength: 2000 })),
        }),
      },
    },
    async (request, reply) => {
      const next = safeNext(request.body.next);
      // Guessing the key through the form costs what guessing it through the API does.
      app.authFailures.check(request.ip);
      if (!sessions.isOperatorKey(request.body.key)) {
        app.authFailures.fail(request.ip);
        return reply.code(401).view("pages/login.njk", {
          ...(await page(request, reply, "", "Log in")),
          next,
          problem: "That is not the operator key.",
        });
      }
      await sessions.logIn(request, reply);
      return reply.redirect(next, 303);
    },
  );

  app.post("/logout", { preHandler: checkCsrf, schema: { hide: true } }, async (request, reply) => {
    const { sessionId } = request.dashboardSession;
    await sessions.logOut(request, reply);
    // Its open pages stop hearing anything at once.
    if (sessionId !== undefined) app.closeSockets(sessionSockets(sessionId), "logged out");
    return reply.redirect("/", 303);
  });

  app.get(
    "/live",
    {
      websocket: true,
      // Other sites' pages were refused already (same-origin.ts), before any cookie counted.
      preHandler: [
        canView,
        // A live tail of a text search runs the search when it connects, to catch the page up.
        app.expensiveRead(
          (request) => (request.query as { view?: string }).view === "events" && isTextSearch(request),
        ),
      ],
      schema: { hide: true, querystring: LiveQuery },
    },
    (socket, request) => {
      if (!app.admitSocket(socket, request)) return;
      const query = request.query;
      let spec: LiveSpec;
      switch (query.view) {
        case "tasks":
          spec = { view: "tasks", status: query.status, before: query.before };
          break;
        case "task":
        case "agent": {
          const id = query.view === "task" ? query.task_id : query.agent_id;
          if (id === undefined) return socket.close(4400, `${query.view}_id is required`);
          spec =
            query.view === "task"
              ? { view: "task", task_id: id, ...(query.paged === "1" ? { paged: true } : {}) }
              : { view: "agent", agent_id: id };
          break;
        }
        case "events": {
          const filter: EventFilter = toFilter(query);
          try {
            normalizeFilter(filter);
            rendererOf(request).model.checkFilter(filter);
          } catch (error) {
            return socket.close(4400, closeReason(error instanceof Error ? error.message : "bad filter"));
          }
          spec = { view: "events", filter };
          break;
        }
        case "agents":
          spec = {
            view: "agents",
            ...(query.after === undefined ? {} : { after: parseBoardCursor(query.after) }),
          };
          break;
        case "overview":
          spec = { view: query.view };
      }
      hub.connect(socket, liveView(spec, rendererOf(request)), query.after_seq).catch((error: unknown) => {
        request.log.error({ err: error }, "live page failed to connect");
        socket.close(1011, "the page failed to connect; reconnecting");
      });
      // A login's pages end with it (logging out closes them at once; see /logout).
      const { expiresAt } = request.dashboardSession;
      if (expiresAt !== undefined) {
        const ends = setTimeout(
          () => socket.close(CREDENTIALS_REVOKED, "your login has expired; log in again"),
          // Within setTimeout's range (a longer delay would fire at once).
          Math.min(2 ** 31 - 1, Math.max(0, expiresAt.getTime() - eventLog.clock().getTime())),
        );
        ends.unref();
        socket.once("close", () => clearTimeout(ends));
      }
    },
  );
};

/** The websocket a page opens, as a relative URL; the page's script adds `after_seq`. */
export function liveUrl(spec: LiveSpec): string {
  const params = new URLSearchParams({ view: spec.view });
  if (spec.view === "tasks") {
    if (spec.status !== undefined) params.set("status", spec.status);
    if (spec.before !== undefined) params.set("before", String(spec.before));
  } else if (spec.view === "task") {
    params.set("task_id", spec.task_id);
    if (spec.paged === true) params.set("paged", "1");
  } else if (spec.view === "agents") {
    if (spec.after !== undefined) params.set("after", boardCursorText(spec.after));
  } else if (spec.view === "agent") params.set("agent_id", spec.agent_id);
  else if (spec.view === "events") {
    const { types, source, task_id, agent_id, since, until, text } = spec.filter;
    const typeList = types === undefined ? [] : typeof types === "string" ? [types] : types;
    if (typeList.length > 0) params.set("type", typeList.join(","));
    for (const [key, value] of Object.entries({ source, task_id, agent_id, since, until, q: text })) {
      if (value !== undefined) params.set(key, value instanceof Date ? value.toISOString() : value);
    }
  }
  return `/live?${params.toString()}`;
}
