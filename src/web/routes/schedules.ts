/**
 * Schedules over HTTP: an operator makes, lists, pauses, resumes and deletes them; each firing
 * posts a task with `schedule_id` (the Scheduler, src/coordinator/scheduler.ts).
 */
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "typebox";
import {
  checkScheduleInput,
  firstFiring,
  ScheduleInputError,
  type Schedule,
} from "../../coordinator/schedules.js";
import { SwarmError } from "../../errors.js";
import { EventType } from "../../event-log/event-types.js";
import { newId } from "../../ids.js";
import type { ScheduleWrite } from "../../storage/port.js";
import type { App } from "../app.js";
import { errorResponses, IdParams, NoQuery, PostTaskBody } from "../schemas.js";

const ScheduledTaskBody = Type.Omit(PostTaskBody, ["assign_to", "depends_on"], {
  additionalProperties: false,
  description:
    "The body of the task each firing posts, as POST /api/tasks takes it (without assign_to and depends_on)",
});

const CreateScheduleBody = Type.Object(
  {
    cron: Type.String({
      minLength: 1,
      maxLength: 200,
      description:
        "Five fields (minute hour day-of-month month day-of-week), or six with seconds first as node-cron takes them; aliases such as @daily",
    }),
    timezone: Type.Optional(
      Type.String({ maxLength: 100, description: "IANA time zone the cron is read in; default UTC" }),
    ),
    task: ScheduledTaskBody,
  },
  { additionalProperties: false },
);

export const ScheduleSchema = Type.Object({
  id: Type.String(),
  cron: Type.String(),
  timezone: Type.String(),
  task: Type.Object(
    {},
    { additionalProperties: true, description: "The checked body of the task each firing posts" },
  ),
  paused: Type.Boolean(),
  next_fire_at: Type.Union([Type.String(), Type.Null()], {
    description: "When it fires next; null while paused",
  }),
  last_fired_at: Type.Union([Type.String(), Type.Null()]),
  fired: Type.Integer({ description: "Firings so far" }),
  created_at: Type.String(),
});
const ScheduleResponse = Type.Object({ schedule: ScheduleSchema });

/** What an operator does to schedules, for the API and the dashboard alike. */
export function scheduleActions({ coordinator, serverStore }: Pick<App, "coordinator" | "serverStore">) {
  const requireSchedule = async (id: string): Promise<Schedule> => {
    const schedule = await serverStore.getSchedule(id);
    if (schedule === undefined)
      throw new SwarmError("SCHEDULE_NOT_FOUND", `no schedule ${id}`, { schedule_id: id });
    return schedule;
  };
  /** Write the change with its event, stamped on the coordinator's clock. */
  const write = async (
    change: ScheduleWrite,
    type: string,
    schedule: Schedule,
    data: Record<string, string | number | null> = {},
  ) => {
    await serverStore.writeSchedule(change, {
      event_type: type,
      source: "operator",
      data: { schedule_id: schedule.id, cron: schedule.cron, timezone: schedule.timezone, ...data },
      timestamp: (await coordinator.now()).toISOString(),
    });
  };
  return {
    requireSchedule,
    /** Pause, or resume from the next firing after now; a schedule already so is left as it is. */
    async setPaused(id: string, paused: boolean): Promise<Schedule> {
      const schedule = await requireSchedule(id);
      if (schedule.paused === paused) return schedule;
      const nextFireAt = paused
        ? null
        : firstFiring(schedule.cron, schedule.timezone, (await coordinator.now()).getTime());
      await write(
        { kind: "set_paused", schedule_id: schedule.id, paused, next_fire_at: nextFireAt },
        paused ? EventType.SCHEDULE_PAUSED : EventType.SCHEDULE_RESUMED,
        schedule,
        { next_fire_at: nextFireAt },
      );
      return { ...schedule, paused, next_fire_at: nextFireAt };
    },
    async remove(id: string): Promise<Schedule> {
      const schedule = await requireSchedule(id);
      await write({ kind: "delete", schedule_id: schedule.id }, EventType.SCHEDULE_DELETED, schedule, {
        fired: schedule.fired,
      });
      return schedule;
    },
    async create(body: { cron?: unknown; timezone?: unknown; task?: unknown }): Promise<Schedule> {
      let checked;
      try {
        checked = checkScheduleInput(body, coordinator.rules);
      } catch (error) {
        if (!(error instanceof ScheduleInputError)) throw error;
        throw new SwarmError("INVALID_COMMAND", error.message, { field: error.field });
      }
      const now = await coordinator.now();
      const schedule: Schedule = {
        id: newId(),
        ...checked,
        paused: false,
        next_fire_at: firstFiring(checked.cron, checked.timezone, now.getTime()),
        last_fired_at: null,
        fired: 0,
        created_at: now.toISOString(),
      };
      await write({ kind: "create", schedule }, EventType.SCHEDULE_CREATED, schedule, {
        description: schedule.task.description.slice(0, 200),
        next_fire_at: schedule.next_fire_at,
      });
      return schedule;
    },
  };
}

export const scheduleRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { guard, serverStore } = app;
  const actions = scheduleActions(app);

  app.post(
    "/api/schedules",
    {
      preHandler: guard.operator,
      schema: {
        tags: ["schedules"],
        summary: "Make a schedule: each firing of its cron posts the task (the operator)",
        description:
          "Each firing posts one task with `schedule_id`, and logs `schedule.fired` with the time it stands for, exactly " +
          "once however many replicas run; a firing missed while the coordinator was down is made up once " +
          "(`missed_firings` counts those skipped). An invalid `cron` or `timezone` is a 400 naming it.",
        body: CreateScheduleBody,
        response: { 201: ScheduleResponse, ...errorResponses(400, 401, 403) },
      },
    },
    async (request, reply) => reply.code(201).send({ schedule: await actions.create(request.body) }),
  );

  app.get(
    "/api/schedules",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["schedules"],
        summary: "Every schedule, oldest first",
        querystring: NoQuery,
        response: {
          200: Type.Object({ schedules: Type.Array(ScheduleSchema) }),
          ...errorResponses(400, 401),
        },
      },
    },
    async () => ({ schedules: await serverStore.listSchedules() }),
  );

  app.get(
    "/api/schedules/:id",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["schedules"],
        params: IdParams,
        querystring: NoQuery,
        response: { 200: ScheduleResponse, ...errorResponses(400, 401, 404) },
      },
    },
    async (request) => ({ schedule: await actions.requireSchedule(request.params.id) }),
  );

  for (const paused of [true, false]) {
    app.post(
      `/api/schedules/:id/${paused ? "pause" : "resume"}`,
      {
        preHandler: guard.operator,
        schema: {
          tags: ["schedules"],
          summary: paused
            ? "Pause a schedule: it fires no more until resumed (the operator)"
            : "Resume a paused schedule from its next firing after now (the operator)",
          params: IdParams,
          response: { 200: ScheduleResponse, ...errorResponses(401, 403, 404) },
        },
      },
      async (request) => ({ schedule: await actions.setPaused(request.params.id, paused) }),
    );
  }

  app.delete(
    "/api/schedules/:id",
    {
      preHandler: guard.operator,
      schema: {
        tags: ["schedules"],
        summary: "Delete a schedule; the tasks it posted stay (the operator)",
        params: IdParams,
        response: { 200: ScheduleResponse, ...errorResponses(401, 403, 404) },
      },
    },
    async (request) => ({ schedule: await actions.remove(request.params.id) }),
  );
};
