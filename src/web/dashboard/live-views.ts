/**
 * What each page pushes live: which events concern it, the fragments a batch of them becomes,
 * and its state for a (re)connecting page. The page templates include the same partials.
 */
import { TASK_STATUSES, type TaskStatus } from "../../coordinator/types.js";
import { eventMatches } from "../../storage/event-queries.js";
import type { EventFilter, StoredEvent } from "../../event-log/types.js";
import { normalizeFilter } from "../../event-log/validate.js";
import type { LiveView } from "./live.js";
import type { BoardCursor } from "../../storage/coordinator-records.js";
import { FEED_CAP, PAGE_SIZE, TIMELINE_WINDOW } from "./model.js";
import type { Renderer } from "./render.js";

/** Views whose pages show how many bids of an open auction are sealed (never who or how much). */
const SHOWS_SEALED_COUNTS = new Set<LiveSpec["view"]>(["overview", "task"]);

/** Rows an events list keeps while tailing; older ones are dropped from the page. */
export const TAIL_CAP = 200;

export type LiveSpec =
  | { view: "overview" }
  | { view: "tasks"; status?: TaskStatus; before?: number }
  /** `paged`: a window of the timeline other than the newest, which does not grow live. */
  | { view: "task"; task_id: string; paged?: boolean }
  /** `after`: a page of the list after the first, which new agents do not join at the top. */
  | { view: "agents"; after?: BoardCursor }
  | { view: "agent"; agent_id: string }
  | { view: "events"; filter: EventFilter };

/** The ids of the records a batch touched, once each, in order of first appearance. */
function distinct(
  events: readonly StoredEvent[],
  key: "task_id" | "agent_id",
  except?: Set<string>,
): string[] {
  const ids = new Set<string>();
  for (const event of events) {
    const id = event[key];
    if (id !== null && !except?.has(id)) ids.add(id);
  }
  return [...ids];
}

/** What a page pushes live, for the viewer its renderer renders for. */
export function liveView(spec: LiveSpec, renderer: Renderer): LiveView {
  const view = viewFor(spec, renderer);
  const { model } = renderer;
  return {
    ...view,
    // Viewers who may see different things must not share one rendered message.
    key: `${model.audienceKey}|${view.key}`,
    // An event this viewer may not see (a sealed bid) must not move its page at all: even a
    // re-rendered agent card would say who bid. Only the overview and the task page, which show
    // how many bids are sealed and never whose, re-render for it.
    matches: (event) => view.matches(event) && (SHOWS_SEALED_COUNTS.has(spec.view) || model.isVisible(event)),
  };
}

function viewFor(spec: LiveSpec, renderer: Renderer): LiveView {
  const { model } = renderer;
  const { coordinator } = model;
  switch (spec.view) {
    case "overview":
      return {
        key: "overview",
        matches: () => true,
        update: (events) => renderer.newestFirst(events, FEED_CAP, "feed"),
        snapshot: async (lists) =>
          (await renderer.overviewSummary()) +
          (lists ? renderer.feed(await model.recentEvents({}, FEED_CAP), true) : ""),
        summary: () => renderer.overviewSummary(),
        catchUp: { filter: {}, limit: FEED_CAP },
      };

    case "tasks": {
      const { status, before } = spec;
      // New tasks start bidding, so they belong at the top of the newest page unless it filters them out.
      const showsNewTasks = before === undefined && (status === undefined || status === "bidding");
      return {
        key: `tasks|${status ?? ""}|${before ?? ""}`,
        matches: (event) => event.task_id !== null,
        update: async (events) => {
          const created = new Set(
            showsNewTasks
              ? events.filter((e) => e.event_type === "task.created").map((e) => e.task_id ?? "")
              : [],
          );
          const tasksOf = async (ids: string[]) =>
            (await Promise.all(ids.map(async (id) => coordinator.getTask(id)))).filter(
              (task) => task !== undefined,
            );
          const fresh = await model.taskRows(await tasksOf([...created].reverse()));
          const prepend = fresh.length > 0 ? renderer.render("task-rows", { rows: fresh }) : "";
          const changed = await model.taskRows(await tasksOf(distinct(events, "task_id", created)));
          return prepend + changed.map((row) => renderer.taskRow(row)).join("");
        },
        snapshot: async () =>
          renderer.render("task-list", {
            ...(await model.tasks({ status, before })),
            filter: { status, before },
            statuses: TASK_STATUSES,
            oob: true,
          }),
        catchUp: null,
      };
    }

    case "task": {
      const taskId = spec.task_id;
      const state = async () => {
        const task = await coordinator.getTask(taskId);
        return task === undefined ? "" : renderer.taskState(task);
      };
      // A window paged back to stays as it was; its card, bids and tool calls stay live.
      if (spec.paged === true) {
        return {
          key: `task|${taskId}|paged`,
          matches: (event) => event.task_id === taskId,
          update: () => state(),
          snapshot: () => state(),
          catchUp: null,
        };
      }
      return {
        key: `task|${taskId}`,
        matches: (event) => event.task_id === taskId,
        update: async (events) =>
          renderer.eventRows(await model.eventRows(events.slice(-TIMELINE_WINDOW)), "beforeend", "timeline") +
          (await state()),
        snapshot: async (lists) => (await state()) + (lists ? await renderer.timeline(taskId, true) : ""),
        catchUp: { filter: { task_id: taskId }, limit: TIMELINE_WINDOW },
      };
    }

    case "agents": {
      const after = spec.after;
      return {
        key: `agents|${after === undefined ? "" : JSON.stringify(after)}`,
        matches: (event) => event.agent_id !== null,
        update: async (events) => {
          // New agents join the top of the first page only; a later page is a place in the order.
          const joined = new Set(
            after !== undefined
              ? []
              : events.filter((e) => e.event_type === "agent.joined").map((e) => e.agent_id ?? ""),
          );
          const rowsOf = async (ids: string[]) => {
            const agents = await Promise.all(ids.map(async (id) => coordinator.getAgent(id)));
            return Promise.all(
              agents.filter((agent) => agent !== undefined).map((agent) => model.agentRow(agent)),
            );
          };
          const fresh = await rowsOf([...joined].reverse());
          const prepend = fresh.length > 0 ? renderer.render("agent-rows", { rows: fresh }) : "";
          const changed = (await rowsOf(distinct(events, "agent_id", joined))).map((agent) =>
            renderer.render("agent-row", { agent, rowOob: true }),
          );
          return prepend + changed.join("");
        },
        snapshot: async () =>
          renderer.render("agent-table", {
            ...(await model.agents({ after, includeStats: true })),
            after,
            oob: true,
          }),
        catchUp: null,
      };
    }

    case "agent": {
      const agentId = spec.agent_id;
      const state = async (withTasks: boolean) => {
        const agent = await coordinator.getAgent(agentId);
        if (agent === undefined) return "";
        const context = { detail: await model.agentDetail(agent), oob: true };
        return (
          renderer.render("agent-card", context) + (withTasks ? renderer.render("agent-tasks", context) : "")
        );
      };
      return {
        key: `agent|${agentId}`,
        matches: (event) => event.agent_id === agentId,
        update: async (events) =>
          (await renderer.newestFirst(events, TAIL_CAP, "event-rows")) +
          (await state(events.some((e) => e.task_id !== null))),
        snapshot: async (lists) =>
          (await state(true)) +
          (lists
            ? renderer.render("event-list", {
                rows: await model.recentEvents({ agent_id: agentId }, PAGE_SIZE),
                cap: TAIL_CAP,
                oob: true,
              })
            : ""),
        catchUp: { filter: { agent_id: agentId }, limit: TAIL_CAP },
      };
    }

    case "events": {
      const filter = spec.filter;
      const normalized = normalizeFilter(filter);
      const counts = async () => renderer.render("event-counts", { summary: model.typeCounts(), oob: true });
      return {
        key: `events|${JSON.stringify(filter)}`,
        matches: (event) => eventMatches(event, normalized),
        update: (events) => renderer.newestFirst(events, TAIL_CAP, "event-rows"),
        snapshot: async (lists) =>
          (await counts()) +
          (lists
            ? renderer.render("event-list", {
                rows: await model.recentEventsAsync(filter, PAGE_SIZE),
                cap: TAIL_CAP,
                filtered: Object.keys(filter).length > 0,
                oob: true,
              })
            : ""),
        summary: counts,
        catchUp: { filter, limit: TAIL_CAP },
      };
    }
  }
}
