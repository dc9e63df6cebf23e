import { createHash } from "node:crypto";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "typebox";
import { toolReportData } from "../../coordinator/decide.js";
import { isSwarmError, SwarmError } from "../../errors.js";
import { agentOf } from "../auth.js";
import type { BidCursor } from "../../storage/coordinator-records.js";
import type { Task } from "../../coordinator/types.js";
import type { EventFilter } from "../../event-log/types.js";
import type { Reader, VisibleTask } from "../visibility.js";
import {
  BidBody,
  BidListQuery,
  BidSchema,
  CompleteBody,
  errorResponses,
  EventSchema,
  IdParams,
  NoQuery,
  PostTaskBody,
  ReasonBody,
  AssignBody,
  ReleaseBody,
  TaskEventsQuery,
  TaskListQuery,
  TaskSchema,
  ToolBody,
} from "../schemas.js";
import { bidView } from "../views.js";
import type { StoredEvent } from "../../event-log/types.js";

const TaskResponse = Type.Object({ task: TaskSchema });
/** Bids `GET /api/tasks/:id` shows; the rest are a page or more away. */
const TASK_BIDS_SHOWN = 100;

function bidCursorText(cursor: BidCursor): string {
  return `${cursor.attempt}.${cursor.agent_id}`;
}

/** A cursor that matched BID_CURSOR_PATTERN. */
function parseBidCursor(text: string): BidCursor {
  const dot = text.indexOf(".");
  return { attempt: Number(text.slice(0, dot)), agent_id: text.slice(dot + 1) };
}
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,200}$/;

/** JSON with every object's keys sorted: two bodies that differ only in key order read the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** What "the same request" means for an Idempotency-Key: the validated body, canonically. */
function requestDigest(body: unknown): string {
  return createHash("sha256").update(canonicalJson(body)).digest("hex");
}

function keyReused(key: string): SwarmError {
  return new SwarmError(
    "IDEMPOTENCY_KEY_REUSED",
    `Idempotency-Key ${key} was already used with a different body; use a new key for a new task`,
    { field: "headers.idempotency-key", idempotency_key: key },
  );
}

export const taskRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { coordinator, guard, eventLog, visibility, serverStore } = app;
  /** The task a key already made, if the body is that first one's; a key from before digests were kept matches any. */
  const taskForKey = async (key: string, digest: string) => {
    const earlier = await serverStore.idempotencyKey(key);
    if (earlier === undefined) return undefined;
    if (earlier.request_digest !== null && earlier.request_digest !== digest) throw keyReused(key);
    return requireTask(earlier.task_id);
  };
  /** Reports by call_id being checked or stored right now: a repeat waits for the first. */
  const toolReportsInFlight = new Map<string, Promise<{ event: StoredEvent; repeat: boolean }>>();
  const storedToolReport = async (taskId: string, agentId: string, phase: string, callId: string) => {
    const id = await serverStore.toolReportId(taskId, agentId, `tool.${phase}`, callId);
    const event = id === undefined ? null : await eventLog.getEvent(id);
    return event ?? undefined;
  };
  /** A repeat of a report is the same report when the event would record the same of it. */
  const sameToolReport = (stored: StoredEvent, body: Parameters<typeof toolReportData>[0]) => {
    const recorded = toolReportData(body);
    return (Object.keys(recorded) as (keyof typeof recorded)[]).every(
      (field) => stored.data[field] === recorded[field],
    );
  };
  const requireTask = async (id: string) => {
    const task = await coordinator.getTask(id);
    if (task === undefined) throw new SwarmError("TASK_NOT_FOUND", `no task ${id}`);
    return task;
  };

  app.post(
    "/api/tasks",
    {
      preHandler: guard.operator,
      schema: {
        tags: ["tasks"],
        summary: "Post a task; it goes straight to auction",
        description:
          "An `Idempotency-Key` header makes a retried post return the task it created (200) instead of a second one; the same key with a different body (compared as canonical JSON, key order aside) is refused with 422.",
        body: PostTaskBody,
        headers: Type.Object({ "idempotency-key": Type.Optional(Type.String()) }),
        response: { 200: TaskResponse, 201: TaskResponse, ...errorResponses(400, 401, 403, 422, 429) },
      },
    },
    async (request, reply) => {
      const key = request.headers["idempotency-key"];
      if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
        throw new SwarmError(
          "VALIDATION_FAILED",
          "headers.idempotency-key: must be 1-200 printable ASCII characters",
          {
            field: "headers.idempotency-key",
          },
        );
      }
      const digest = requestDigest(request.body);
      const earlier = key === undefined ? undefined : await taskForKey(key, digest);
      if (earlier !== undefined) return reply.code(200).send({ task: earlier });
      try {
        const result = await coordinator.submit({ type: "PostTask", ...request.body }, ({ task }) =>
          key === undefined || task === undefined
            ? []
            : [
                {
                  kind: "idempotency_key",
                  key,
                  task_id: task.id,
                  request_digest: digest,
                  created_at: task.created_at,
                },
              ],
        );
        return reply.code(201).send({ task: result.task! });
      } catch (error) {
        // Two posts with one key in flight together: the second lost the race to the first, and
        // answers the first's task if it carried the same body, or 422 if not.
        const winner =
          key === undefined || isSwarmError(error, "VALIDATION_FAILED")
            ? undefined
            : await taskForKey(key, digest);
        if (winner !== undefined) return reply.code(200).send({ task: winner });
        throw error;
      }
    },
  );

  app.get(
    "/api/tasks",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["tasks"],
        summary: "Tasks, newest first",
        querystring: TaskListQuery,
        response: {
          200: Type.Object({
            tasks: Type.Array(TaskSchema),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errorResponses(400, 401),
        },
      },
    },
    async (request) => {
      const { status, agent_id, limit, cursor } = request.query;
      const page = await coordinator.store.listTasks({
        status,
        agent_id,
        limit: limit ?? 50,
        before: cursor === undefined ? undefined : Number(cursor),
      });
      const reader = app.readerOf(request);
      return {
        tasks: page.tasks.map((task) => visibility.task(task, reader)),
        next_cursor: page.next_cursor,
      };
    },
  );

  const BidsSealed = Type.Integer({
    description: "Bids of the open auction round that this reader may not see until it closes",
  });
  const BidCursorText = Type.Union([Type.String(), Type.Null()], {
    description:
      "Where the next page of bids starts (GET /api/tasks/{id}/bids?cursor=); null when none follow",
  });
  /** A page of the task's bids as `reader` may see them, and how many of the open round's are sealed. */
  const bidPage = async (task: Task, reader: Reader, limit: number, cursor?: string) => {
    const page = await coordinator.store.listBids({
      task_id: task.id,
      after: cursor === undefined ? undefined : parseBidCursor(cursor),
      sealed: visibility.sealedRound(task, reader),
      limit,
    });
    // The sealed count is of the open round's bids.
    const { sealed } =
      task.status === "bidding" && reader.kind !== "operator"
        ? visibility.bids(task, await coordinator.openBids(task.id), reader)
        : { sealed: 0 };
    return {
      bids: page.bids.map(bidView),
      bids_sealed: sealed,
      next_cursor: page.next_cursor === null ? null : bidCursorText(page.next_cursor),
    };
  };

  app.get(
    "/api/tasks/:id",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["tasks"],
        description: `\`bids\` holds the first ${TASK_BIDS_SHOWN} bids (by round, then agent id); \`bids_next_cursor\` continues them at GET /api/tasks/{id}/bids.`,
        params: IdParams,
        querystring: NoQuery,
        response: {
          200: Type.Object({
            task: TaskSchema,
            bids: Type.Array(BidSchema),
            bids_sealed: BidsSealed,
            bids_next_cursor: BidCursorText,
          }),
          ...errorResponses(400, 401, 404),
        },
      },
    },
    async (request) => {
      const task = await requireTask(request.params.id);
      const reader = app.readerOf(request);
      const { bids, bids_sealed, next_cursor } = await bidPage(task, reader, TASK_BIDS_SHOWN);
      return { task: visibility.task(task, reader), bids, bids_sealed, bids_next_cursor: next_cursor };
    },
  );

  app.get(
    "/api/tasks/:id/dependencies",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["tasks"],
        summary: "The tasks this one depends on, with their results for the agent that runs it",
        description:
          "In `depends_on` order. The agent the task is assigned to sees each dependency's `result` (what its " +
          "handler gets as `dependencies`); other agents see them as on GET /api/tasks/{id}, results withheld.",
        params: IdParams,
        querystring: NoQuery,
        response: {
          200: Type.Object({ dependencies: Type.Array(TaskSchema) }),
          ...errorResponses(400, 401, 404),
        },
      },
    },
    async (request) => {
      const task = await requireTask(request.params.id);
      const reader = app.readerOf(request);
      // The dependent's runner reads what its dependencies produced: that is what they are for.
      const runsIt = reader.kind === "agent" && task.assigned_agent === reader.agentId;
      const dependencies: VisibleTask[] = [];
      for (const id of task.depends_on) {
        const dependency = await coordinator.getTask(id);
        if (dependency !== undefined)
          dependencies.push(runsIt ? dependency : visibility.task(dependency, reader));
      }
      return { dependencies };
    },
  );

  app.get(
    "/api/tasks/:id/bids",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["tasks"],
        summary: "The task's bids, a page at a time: by round, then agent id",
        description:
          "While a round is open an agent sees only its own bid in it, and `bids_sealed` counts the others. A replaced bid keeps its place, so a walk sees each agent's bid in a round once.",
        params: IdParams,
        querystring: BidListQuery,
        response: {
          200: Type.Object({
            bids: Type.Array(BidSchema),
            bids_sealed: BidsSealed,
            next_cursor: BidCursorText,
          }),
          ...errorResponses(400, 401, 404),
        },
      },
    },
    async (request) => {
      const task = await requireTask(request.params.id);
      return bidPage(task, app.readerOf(request), request.query.limit ?? 100, request.query.cursor);
    },
  );

  app.get(
    "/api/tasks/:id/events",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["tasks"],
        summary: "The task's timeline, oldest first, a page at a time",
        description:
          "Pass `next_cursor` back as `after_seq` for the next page; it is null on the last. A page is as the reader may see it: sealed bids are left out before it is cut.",
        params: IdParams,
        querystring: TaskEventsQuery,
        response: {
          200: Type.Object({
            events: Type.Array(EventSchema),
            next_cursor: Type.Union([Type.Integer(), Type.Null()]),
          }),
          ...errorResponses(400, 401, 404),
        },
      },
    },
    async (request) => {
      const task = await requireTask(request.params.id);
      const reader = app.readerOf(request);
      const { after_seq, limit = 100 } = request.query;
      const list = (filter: EventFilter) =>
        visibility.listEventsAsync(async (page) => eventLog.listEvents(page), reader, {
          task_id: task.id,
          order: "asc",
          ...filter,
        });
      const page = await list({ after_seq, limit });
      // A full page may be the last: one more event this reader may see says whether it is.
      const more =
        page.next_cursor !== null &&
        (await list({ after_seq: page.next_cursor, limit: 1 })).events.length > 0;
      return { events: page.events, next_cursor: more ? page.next_cursor : null };
    },
  );

  app.post(
    "/api/tasks/:id/bids",
    {
      preHandler: guard.agent,
      schema: {
        tags: ["tasks"],
        summary:
          "Bid on the task's open auction (agent); a new bid replaces the agent's earlier one, the same amount again changes nothing (200)",
        params: IdParams,
        body: BidBody,
        response: {
          200: Type.Object({ bid: BidSchema }),
          201: Type.Object({ bid: BidSchema }),
          ...errorResponses(400, 401, 403, 404, 409, 429),
        },
      },
    },
    async (request, reply) => {
      const result = await coordinator.submit({
        type: "SubmitBid",
        task_id: request.params.id,
        agent_id: agentOf(request),
        bid_sats: request.body.bid_sats,
      });
      // A repeat of the standing bid wrote nothing: 200, as for any replayed request.
      return reply.code(result.events.length === 0 ? 200 : 201).send({ bid: bidView(result.bid!) });
    },
  );

  const lifecycle = {
    params: IdParams,
    response: { 200: TaskResponse, ...errorResponses(400, 401, 403, 404, 409) },
  };

  app.post(
    "/api/tasks/:id/start",
    {
      preHandler: guard.agent,
      schema: { tags: ["tasks"], summary: "Start (the assigned agent)", ...lifecycle },
    },
    async (request) => {
      const result = await coordinator.submit({
        type: "StartTask",
        task_id: request.params.id,
        agent_id: agentOf(request),
      });
      return { task: result.task! };
    },
  );

  app.post(
    "/api/tasks/:id/complete",
    {
      preHandler: guard.agent,
      schema: { tags: ["tasks"], summary: "Complete (the assigned agent)", body: CompleteBody, ...lifecycle },
    },
    async (request) => {
      const result = await coordinator.submit({
        type: "CompleteTask",
        task_id: request.params.id,
        agent_id: agentOf(request),
        result: request.body?.result,
      });
      return { task: result.task! };
    },
  );

  app.post(
    "/api/tasks/:id/fail",
    {
      schema: {
        tags: ["tasks"],
        summary: "Fail (the assigned agent, or the operator)",
        body: ReasonBody,
        ...lifecycle,
      },
    },
    async (request, reply) => {
      const caller = request.caller;
      // An agent fails its own task; anyone else must pass as the operator.
      if (caller.kind !== "agent") await guard.operator(request, reply);
      const result = await coordinator.submit({
        type: "FailTask",
        task_id: request.params.id,
        agent_id: caller.kind === "agent" ? caller.agentId : undefined,
        reason: request.body?.reason,
      });
      return { task: result.task! };
    },
  );

  app.post(
    "/api/tasks/:id/release",
    {
      preHandler: guard.agent,
      schema: {
        tags: ["tasks"],
        summary: "Hand the task back unfinished (the assigned agent, on a graceful stop)",
        description:
          "Only the agent the task is assigned to, with its own token, while the task is assigned or running. " +
          "Logs `task.released` and puts the task up for auction again (`task.bidding`, the next round); the task is " +
          "not failed, and a round handed back does not count towards the limit of rounds. " +
          "409 `TASK_NOT_ACTIVE` while the task is in its auction (a retry after the hand-back went through gets this), " +
          "409 `TASK_FINAL` once it has ended, 403 `NOT_ASSIGNED_AGENT` for another agent's task.",
        body: ReleaseBody,
        ...lifecycle,
      },
    },
    async (request) => {
      const result = await coordinator.submit({
        type: "ReleaseTask",
        task_id: request.params.id,
        agent_id: agentOf(request),
        reason: request.body?.reason,
      });
      return { task: result.task! };
    },
  );

  app.post(
    "/api/tasks/:id/cancel",
    {
      preHandler: guard.operator,
      schema: { tags: ["tasks"], summary: "Cancel (the operator)", body: ReasonBody, ...lifecycle },
    },
    async (request) => {
      const result = await coordinator.submit({
        type: "CancelTask",
        task_id: request.params.id,
        reason: request.body?.reason,
      });
      return { task: result.task! };
    },
  );

  app.post(
    "/api/tasks/:id/assign",
    {
      preHandler: guard.operator,
      schema: {
        tags: ["tasks"],
        summary: "Give a task in its auction to an agent, ending the auction (the operator)",
        description:
          "The agent must be online, have every required capability and be below its capacity: otherwise 409 " +
          "`AGENT_OFFLINE`, `AGENT_NOT_ELIGIBLE` or `AGENT_AT_CAPACITY` (404 `AGENT_NOT_FOUND`, 409 `AGENT_LEFT`). " +
          "409 `TASK_NOT_BIDDING` unless the task is in its auction. Logs `auction.closed` (reason " +
          '`assigned by the operator`) and `task.assigned` with `data.by: "operator"`; the agent\'s bid, if it bid, is the price.',
        body: AssignBody,
        ...lifecycle,
      },
    },
    async (request) => {
      const result = await coordinator.submit({
        type: "AssignTask",
        task_id: request.params.id,
        agent_id: request.body.agent_id,
      });
      return { task: result.task! };
    },
  );

  app.post(
    "/api/tasks/:id/retry",
    {
      preHandler: guard.operator,
      schema: {
        tags: ["tasks"],
        summary: "Run a failed or cancelled task again as a new task (the operator)",
        description:
          "Posts a new task with the same body; the new task's `retry_of` names this one, and this one's " +
          "`retried_by` names the new one (`task.retried` on this task). 409 `TASK_NOT_RETRYABLE` unless the task " +
          "failed or was cancelled, 409 `TASK_ALREADY_RETRIED` (with `details.retry_task_id`) if it was run again already.",
        params: IdParams,
        response: { 201: TaskResponse, ...errorResponses(401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      const result = await coordinator.submit({ type: "RetryTask", task_id: request.params.id });
      return reply.code(201).send({ task: result.task! });
    },
  );

  app.post(
    "/api/tasks/:id/tools",
    {
      preHandler: guard.agent,
      schema: {
        tags: ["tasks"],
        summary:
          "Report a tool call of a running task (the assigned agent); a repeat of a call_id and phase answers 200 with the event first stored, or 422 when its body differs",
        params: IdParams,
        body: ToolBody,
        response: {
          200: Type.Object({ event: EventSchema }),
          201: Type.Object({ event: EventSchema }),
          ...errorResponses(400, 401, 403, 404, 409, 422, 429),
        },
      },
    },
    async (request, reply) => {
      const { tool, phase, call_id, input, output, error } = request.body;
      const agentId = agentOf(request);
      // An agent whose answer was lost (a restart, a dropped connection) sends the report
      // again; with a call_id it is recognised, stored or still in flight, and not stored twice.
      const replayKey =
        call_id === undefined ? undefined : JSON.stringify([request.params.id, agentId, phase, call_id]);
      const report = async (): Promise<{ event: StoredEvent; repeat: boolean }> => {
        const earlier =
          call_id === undefined
            ? undefined
            : await storedToolReport(request.params.id, agentId, phase, call_id);
        if (earlier !== undefined) return { event: earlier, repeat: true };
        const result = await coordinator.submit({
          type: "RecordToolCall",
          task_id: request.params.id,
          agent_id: agentId,
          tool,
          phase,
          call_id,
          input,
          output,
          error,
        });
        return {
          event: result.events.find((e) => e.event_type.startsWith("tool.")) as StoredEvent,
          repeat: false,
        };
      };
      // Checked and stored under one entry, so that a repeat arriving meanwhile waits for it.
      const inFlight = replayKey === undefined ? undefined : toolReportsInFlight.get(replayKey);
      const pending = inFlight ?? report();
      if (replayKey !== undefined && inFlight === undefined) {
        toolReportsInFlight.set(replayKey, pending);
        const settled = () => toolReportsInFlight.delete(replayKey);
        pending.then(settled, settled);
      }
      const { event, repeat } = await pending;
      if (inFlight === undefined && !repeat) return reply.code(201).send({ event });
      if (!sameToolReport(event, request.body)) {
        throw new SwarmError(
          "IDEMPOTENCY_KEY_REUSED",
          `call_id ${call_id!} was already reported for phase ${phase} with a different body; use a new call_id for a new call`,
          { field: "body.call_id", call_id },
        );
      }
      return reply.code(200).send({ event });
    },
  );
};
