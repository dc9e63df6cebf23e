/**
 * The dashboard's components as HTML. A page includes a component's partial with the context
 * built here, and a live push renders the same partial alone with `oob` set, so the two cannot
 * drift apart. Autoescape is on: every value a template prints is escaped.
 */
import { fileURLToPath } from "node:url";
import type { Environment } from "nunjucks";
import type { Task } from "../../coordinator/types.js";
import type { StoredEvent } from "../../event-log/types.js";
import { shortId } from "../../ids.js";
import { exactUtc, groupDigits, relativeTime } from "./format.js";
import { FEED_CAP, type DashboardModel, type EventRow, type TaskRow } from "./model.js";

const OVERVIEW_AGENTS = 15;

export const VIEWS_DIR = fileURLToPath(new URL("../../../views", import.meta.url));

/** nunjucks' Template has this, its types do not: the names a template defines, its macros. */
interface ExportingTemplate {
  getExported(callback: (error: Error | null, exported: unknown) => void): void;
}

/**
 * Filters the templates use; `now` is read at render time so relative times are fresh. The macros
 * are a global `m`, imported once: the row partials (an event, a task, an agent), rendered by the
 * hundred on a page, each imported them themselves, and every import ran macros.njk again (a third
 * of the CPU a task page took with its window of 100 events: 15 ms, 10 without).
 */
export function configureTemplates(env: Environment, clock: () => Date): void {
  env.addFilter("ago", (iso: string | null | undefined) => relativeTime(iso, clock()));
  env.addFilter("utc", exactUtc);
  env.addFilter("digits", groupDigits);
  env.addFilter("short", shortId);
  const macros = env.getTemplate("macros.njk") as unknown as ExportingTemplate;
  macros.getExported((error, exported) => {
    if (error !== null) throw error;
    env.addGlobal("m", exported);
  });
}

/** One renderer per audience: the operator, and anonymous viewers of a public dashboard. */
export interface DashboardRenderers {
  operator: Renderer;
  public: Renderer;
}

export class Renderer {
  constructor(
    readonly env: Environment,
    readonly model: DashboardModel,
  ) {}

  render(partial: string, context: object): string {
    return this.env.render(`partials/${partial}.njk`, context);
  }

  async overviewSummaryContext() {
    const taskCounts = await this.model.taskCounts();
    const counters = await this.model.counters(taskCounts);
    // The first agents (busy, then idle, then offline) and how many more the agents page pages through.
    const { agents } = await this.model.agents({ limit: OVERVIEW_AGENTS });
    const registered = counters.agents.online + counters.agents.offline;
    return {
      counters,
      auctions: await this.model.auctions(),
      agents,
      agentsMore: Math.max(0, registered - agents.length),
      charts: await this.model.charts(taskCounts),
    };
  }

  /** Counters, auctions, agents and charts: the overview's summaries, replaced whole. */
  async overviewSummary(): Promise<string> {
    const context = { ...(await this.overviewSummaryContext()), oob: true };
    return ["counters", "auctions", "agents-compact", "charts"]
      .map((name) => this.render(name, context))
      .join("");
  }

  feed(rows: EventRow[], oob: boolean): string {
    return this.render("feed", { rows, cap: FEED_CAP, oob });
  }

  /** Event rows put into a list already on the page: `afterbegin` for newest-first lists. */
  eventRows(rows: EventRow[], position: "afterbegin" | "beforeend", target: string): string {
    return rows.length === 0 ? "" : this.render("event-rows", { rows, position, target });
  }

  /** New events, newest first, as rows for the front of a newest-first list (at most `cap`). */
  async newestFirst(events: readonly StoredEvent[], cap: number, target: string): Promise<string> {
    const rows = await this.model.eventRows(events.slice(-cap).reverse());
    return this.eventRows(rows, "afterbegin", target);
  }

  taskRow(row: TaskRow): string {
    return this.render("task-row", { task: row, rowOob: true });
  }

  async taskDetailContext(task: Task) {
    return { detail: await this.model.taskDetail(task) };
  }

  /** The task page's state: its card, its bids, its tool calls. */
  async taskState(task: Task): Promise<string> {
    const context = { ...(await this.taskDetailContext(task)), oob: true };
    return ["task-card", "bids", "tool-calls"].map((name) => this.render(name, context)).join("");
  }

  /** The newest window of the task's timeline, with the link to older events. */
  async timeline(taskId: string, oob: boolean): Promise<string> {
    return this.render("timeline", { timeline: await this.model.timeline(taskId), taskId, oob });
  }

  liveSeq(seq: number): string {
    return this.render("live-seq", { seq });
  }
}
