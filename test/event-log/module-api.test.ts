import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { attempt, ENGINES, type Engine } from "../helpers/engines.js";
import { createTestDatabase } from "../helpers/postgres.js";
import { tempDir } from "../helpers/temp-dir.js";

/** Point SWARM_DB, as a user would, at a new database on the engine: a throwaway SQLite one or a fresh PostgreSQL one. */
async function stubDatabase(engine: Engine): Promise<void> {
  vi.stubEnv("SWARM_DB", engine.name === "sqlite" ? ":memory:" : await createTestDatabase());
  vi.stubEnv("LOG_LEVEL", "silent");
}

afterEach(async () => {
  const api = await import("../../src/event-log/index.js");
  await api.closeDefaultEventLog();
  vi.unstubAllEnvs();
  vi.resetModules();
});

describe("module-level API on an SQLite file", () => {
  it("opens nothing at import and opens SWARM_DB at the first call", async () => {
    const path = join(tempDir(), "data", "swarm.db");
    vi.stubEnv("SWARM_DB", path);
    vi.stubEnv("LOG_LEVEL", "silent");
    const api = await import("../../src/event-log/index.js");
    expect(existsSync(path)).toBe(false);
    const stored = await api.logEvent({
      event_type: "task.created",
      source: "script",
      task_id: "t-1",
      data: { n: 1 },
    });
    expect(existsSync(path)).toBe(true);
    expect(await api.getEvent(stored.id)).toEqual(stored);
    expect(await api.getTaskEvents("t-1")).toEqual([stored]);
    expect(api.getDefaultEventLog()).toMatchObject({ engine: "sqlite", path });
  });

  it("opens a PostgreSQL database when SWARM_DB is its URL, migrating it at the first call", async () => {
    if (!ENGINES.some((engine) => engine.name === "postgres")) return;
    const url = await createTestDatabase({ migrated: false });
    vi.stubEnv("SWARM_DB", url);
    vi.stubEnv("LOG_LEVEL", "silent");
    const api = await import("../../src/event-log/index.js");
    const stored = await api.logEvent({ event_type: "task.created", source: "script", task_id: "t-1" });
    expect(api.getDefaultEventLog().engine).toBe("postgres");
    expect(await api.getTaskEvents("t-1")).toEqual([stored]);
    const log = api.createEventLog({ url });
    expect(await log.getEvent(stored.id)).toEqual(stored);
    await log.close();
  });

  it("refuses a URL of another kind, naming the option, and never takes it for a path", async () => {
    const api = await import("../../src/event-log/index.js");
    expect(() => api.createEventLog({ url: "mysql://user:secret@db/swarm" })).toThrow(
      expect.objectContaining({ code: "INVALID_CONFIG", details: { field: "url" } }),
    );
    expect(() => api.createEventLog({ path: "postgres://db/swarm" })).toThrow(
      expect.objectContaining({ code: "INVALID_CONFIG", details: { field: "path" } }),
    );
  });
});

describe.each(ENGINES)("module-level API on $name", (engine) => {
  it("serves the Python-era snake_case names as the very same functions", async () => {
    await stubDatabase(engine);
    const api = await import("../../src/event-log/index.js");
    const pairs = [
      [api.log_event, api.logEvent],
      [api.log_events, api.logEvents],
      [api.get_event, api.getEvent],
      [api.get_task_events, api.getTaskEvents],
      [api.get_agent_events, api.getAgentEvents],
      [api.list_events, api.listEvents],
      [api.get_recent_events, api.getRecentEvents],
      [api.get_event_summary, api.getEventSummary],
      [api.prune_events, api.pruneEvents],
    ] as const;
    for (const [snake, camel] of pairs) expect(snake).toBe(camel);
    await api.log_event({
      event_type: api.EventType.TASK_ASSIGNED,
      source: "coordinator",
      task_id: "t-9",
      agent_id: "a-1",
      data: { bid_sats: 42 },
    });
    await api.log_event({
      event_type: api.EventType.BID_SUBMITTED,
      source: "a-1",
      task_id: "t-9",
      agent_id: "a-1",
      data: { bid_sats: 42 },
    });
    expect((await api.get_task_events("t-9")).map((e) => e.event_type)).toEqual([
      "task.assigned",
      "bid.submitted",
    ]);
    expect(await api.get_agent_events("a-1")).toHaveLength(2);
    expect(await api.get_event_summary(60)).toMatchObject({
      total: 2,
      counts: { "task.assigned": 1, "bid.submitted": 1 },
    });
    expect((await api.get_recent_events(5)).map((e) => e.event_type)).toEqual([
      "bid.submitted",
      "task.assigned",
    ]);
    expect((await api.list_events({ types: "bid.submitted" })).events).toHaveLength(1);
    await expect(api.prune_events(30)).resolves.toBe(0);
  });

  it("lets a server share its own instance and reopens after close", async () => {
    await stubDatabase(engine);
    const api = await import("../../src/event-log/index.js");
    const own = api.createEventLog();
    api.setDefaultEventLog(own);
    const heard: string[] = [];
    own.subscribe((e) => heard.push(e.event_type));
    const joined = await api.logEvent({ event_type: "agent.joined", source: "coordinator" });
    expect(heard).toEqual(["agent.joined"]);
    await api.closeDefaultEventLog();
    expect(own.isClosed).toBe(true);
    expect(api.getDefaultEventLog()).not.toBe(own);
    // A new instance: on a throwaway SQLite log an empty one, on PostgreSQL the same database.
    expect((await api.listEvents()).events).toEqual(engine.name === "sqlite" ? [] : [joined]);
  });

  describe("filters from ported Python code", () => {
    async function withMixedEvents() {
      await stubDatabase(engine);
      const api = await import("../../src/event-log/index.js");
      await api.log_events([
        { event_type: "task.created", source: "coordinator", task_id: "t-1" },
        { event_type: "bid.submitted", source: "a-1", task_id: "t-1", agent_id: "a-1" },
        { event_type: "task.created", source: "coordinator", task_id: "t-2" },
      ]);
      return api;
    }

    it("take event_type, the Python module's keyword, as another name for types", async () => {
      const api = await withMixedEvents();
      expect((await api.list_events({ event_type: "task.created" })).events.map((e) => e.task_id)).toEqual([
        "t-1",
        "t-2",
      ]);
      expect((await api.list_events({ event_type: ["bid.submitted"] })).events.map((e) => e.seq)).toEqual([
        2,
      ]);
      // Both names at once cannot say which was meant: refused, naming the alias.
      await expect(
        attempt(() => api.list_events({ types: "task.created", event_type: "bid.submitted" })),
      ).rejects.toMatchObject({ code: "INVALID_FILTER", details: { field: "event_type" } });
    });

    it("refuse a key that is not a filter, naming it, instead of answering every event", async () => {
      const api = await withMixedEvents();
      const unknown = (filter: object) => attempt(() => api.list_events(filter));
      // `offset` is the Python module's paging; `type` and `q` are the HTTP API's names.
      for (const key of ["offset", "type", "q", "event_types", "taskId"]) {
        await expect(unknown({ [key]: "x" }), key).rejects.toMatchObject({
          code: "INVALID_FILTER",
          details: { field: key },
        });
      }
      await expect(unknown({ offset: 10 })).rejects.toThrow(/offset.*after_seq/);
      await expect(unknown({ type: "task.created" })).rejects.toThrow(/"types"/);
      // Python's keyword arguments written as an object reach positional parameters: refused too.
      await expect(attempt(() => api.get_recent_events({ minutes: 5 } as never))).rejects.toMatchObject({
        code: "INVALID_FILTER",
        details: { field: "minutes" },
      });
      await expect(attempt(() => api.get_event_summary({ minutes: 60 } as never))).rejects.toMatchObject({
        code: "INVALID_FILTER",
        details: { field: "minutes" },
      });
      await expect(
        attempt(() => api.getHourlyCounts({ from: "2026-01-01T00:00:00Z" } as never)),
      ).rejects.toMatchObject({ code: "INVALID_FILTER", details: { field: "from" } });
      const heard: string[] = [];
      await expect(
        attempt(() => api.subscribe(() => undefined, { event: "task.created" } as never)),
      ).rejects.toMatchObject({ code: "INVALID_FILTER", details: { field: "event" } });
      api.subscribe((event) => heard.push(event.event_type), { event_type: "bid.submitted" });
      await api.log_events([
        { event_type: "task.created", source: "coordinator" },
        { event_type: "bid.submitted", source: "a-1" },
      ]);
      expect(heard).toEqual(["bid.submitted"]);
    });

    it("refuse a timeline asked for by anything but an id, and prune_events without its argument", async () => {
      const api = await withMixedEvents();
      await expect(attempt(() => api.get_task_events({ task_id: "t-1" } as never))).rejects.toMatchObject({
        code: "INVALID_FILTER",
        details: { field: "task_id" },
      });
      await expect(attempt(() => api.get_agent_events(undefined as never))).rejects.toMatchObject({
        code: "INVALID_FILTER",
        details: { field: "agent_id" },
      });
      // The Python module pruned 30 days when called bare; this one does not guess.
      await expect(api.prune_events(undefined as never)).rejects.toThrow(/olderThanDays.*required/);
    });
  });
});
