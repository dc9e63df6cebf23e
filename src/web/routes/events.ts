import { Readable } from "node:stream";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { EventLogPort } from "../../storage/port.js";
import { normalizeFilter } from "../../event-log/validate.js";
import type { Static } from "typebox";
import { Type } from "typebox";
import type { EventFilter, StoredEvent } from "../../event-log/types.js";
import type { EventFilterQuery } from "../schemas.js";
import { errorResponses, EventListQuery, EventSchema, ExportQuery, SummaryQuery } from "../schemas.js";

/** `type=a&type=b` or `type=a,b`: every form a client might send, as one list. */
export function splitTypes(type: string | string[] | undefined): string[] | undefined {
  if (type === undefined) return undefined;
  const types = (Array.isArray(type) ? type : [type]).flatMap((part) => part.split(",")).map((t) => t.trim());
  return types.filter((t) => t.length > 0);
}

export function toFilter(query: Static<typeof EventFilterQuery>): EventFilter {
  const filter: EventFilter = {};
  const types = splitTypes(query.type);
  if (types !== undefined && types.length > 0) filter.types = types;
  if (query.source !== undefined) filter.source = query.source;
  if (query.task_id !== undefined) filter.task_id = query.task_id;
  if (query.agent_id !== undefined) filter.agent_id = query.agent_id;
  if (query.since !== undefined) filter.since = query.since;
  if (query.until !== undefined) filter.until = query.until;
  if (query.q !== undefined) filter.text = query.q;
  return filter;
}

/** A text search (`q=`) scans the data of every event in range: an expensive read. */
export function isTextSearch(request: FastifyRequest): boolean {
  return (request.query as { q?: unknown }).q !== undefined;
}

const CSV_COLUMNS = [
  "seq",
  "id",
  "event_type",
  "source",
  "task_id",
  "agent_id",
  "timestamp",
  "data",
] as const;

/** One CSV field: quoted when needed, and never read by a spreadsheet as a formula. */
export function csvField(value: string | number | null): string {
  if (value === null) return "";
  let text = String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvLine(event: StoredEvent): string {
  return `${CSV_COLUMNS.map((column) => csvField(column === "data" ? JSON.stringify(event.data) : event[column])).join(",")}\r\n`;
}

/** Events an export reads and serializes at a time, between yields to the event loop. */
const EXPORT_PAGE = 250;

/**
 * The whole filtered history, streamed as NDJSON or CSV; the API and the dashboard both answer
 * exports with it.
 */
export function sendExport(
  reply: FastifyReply,
  eventLog: EventLogPort,
  filter: EventFilter,
  format: "ndjson" | "csv",
  visible: (events: readonly StoredEvent[]) => Promise<readonly StoredEvent[]>,
): FastifyReply {
  normalizeFilter({ ...filter, limit: 1 }); // refuse a bad filter with a 400 before streaming starts
  const csv = format === "csv";
  async function* lines() {
    if (csv) yield `${CSV_COLUMNS.join(",")}\r\n`;
    let cursor = 0;
    for (;;) {
      // One page at a time, pulled only as fast as the client reads: memory stays flat. Pages of
      // EXPORT_PAGE rows: reading and serializing 1,000 of them held the event loop for up to 75 ms.
      const page = await eventLog.listEventsAsync({ ...filter, after_seq: cursor, limit: EXPORT_PAGE });
      yield (await visible(page.events))
        .map((event) => (csv ? csvLine(event) : `${JSON.stringify(event)}\n`))
        .join("");
      if (page.next_cursor === null) return;
      cursor = page.next_cursor;
      await yieldToEventLoop();
    }
  }
  return reply
    .type(csv ? "text/csv; charset=utf-8" : "application/x-ndjson; charset=utf-8")
    .header("content-disposition", `attachment; filename="events.${csv ? "csv" : "ndjson"}"`)
    .send(Readable.from(lines()));
}

export const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { eventLog, guard, visibility } = app;

  app.get(
    "/api/events",
    {
      preHandler: [guard.reader, app.expensiveRead(isTextSearch)],
      schema: {
        tags: ["events"],
        summary: "Events matching every given filter, by seq",
        querystring: EventListQuery,
        response: {
          200: Type.Object({
            events: Type.Array(EventSchema),
            next_cursor: Type.Union([Type.Integer(), Type.Null()]),
          }),
          ...errorResponses(400, 401, 429),
        },
      },
    },
    async (request) => {
      const { after_seq, before_seq, limit, order } = request.query;
      return visibility.listEventsAsync((filter) => eventLog.listEventsAsync(filter), app.readerOf(request), {
        ...toFilter(request.query),
        after_seq,
        before_seq,
        limit,
        order,
      });
    },
  );

  app.get(
    "/api/events/summary",
    {
      // Up to an hour is what the dashboard shows all the time; longer spans scan far more.
      preHandler: [
        guard.reader,
        app.expensiveRead((request) => ((request.query as { minutes?: number }).minutes ?? 60) > 60),
      ],
      schema: {
        tags: ["events"],
        summary: "Counts by type over the last minutes",
        querystring: SummaryQuery,
        response: {
          200: Type.Object({
            minutes: Type.Integer(),
            total: Type.Integer(),
            counts: Type.Record(Type.String(), Type.Integer()),
          }),
          ...errorResponses(400, 401, 429),
        },
      },
    },
    async (request) => {
      const { minutes, total, counts } = await eventLog.getEventSummaryAsync(request.query.minutes ?? 60);
      return { minutes, total, counts };
    },
  );

  app.get(
    "/api/events/export",
    {
      preHandler: [guard.reader, app.expensiveRead()],
      schema: {
        tags: ["events"],
        summary: "The whole filtered history as NDJSON (default) or CSV, streamed",
        querystring: ExportQuery,
      },
    },
    async (request, reply) => {
      const reader = app.readerOf(request);
      const filter = toFilter(request.query);
      visibility.checkFilter(reader, filter);
      return sendExport(reply, eventLog, filter, request.query.format ?? "ndjson", async (events) => {
        await visibility.ready(events);
        return visibility.events(events, reader);
      });
    },
  );
};
