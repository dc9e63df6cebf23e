import { describe, expect, it } from "vitest";
import { EVENT_LIMITS } from "../../src/event-log/validate.js";
import { ENGINES } from "../helpers/engines.js";

type Case = [name: string, input: unknown, field: string];

const circular: Record<string, unknown> = { a: 1 };
circular.self = circular;
let deep: Record<string, unknown> = {};
const deepRoot = deep;
for (let i = 0; i < EVENT_LIMITS.maxDataDepth + 2; i += 1) {
  const next = {};
  deep.next = next;
  deep = next;
}

const ok = { event_type: "task.created", source: "coordinator" };

const cases: Case[] = [
  ["not an object", "task.created", "event"],
  ["missing event_type", { source: "x" }, "event_type"],
  ["upper-case type", { ...ok, event_type: "Task.Created" }, "event_type"],
  ["undotted type", { ...ok, event_type: "created" }, "event_type"],
  ["type with a trailing dot", { ...ok, event_type: "task." }, "event_type"],
  ["type that is a number", { ...ok, event_type: 7 }, "event_type"],
  ["type too long", { ...ok, event_type: `a.${"b".repeat(200)}` }, "event_type"],
  ["missing source", { event_type: "task.created" }, "source"],
  ["empty source", { ...ok, source: "" }, "source"],
  ["source not a string", { ...ok, source: { name: "x" } }, "source"],
  ["source over the limit", { ...ok, source: "s".repeat(EVENT_LIMITS.maxIdLength + 1) }, "source"],
  ["source with a newline", { ...ok, source: "a\nb" }, "source"],
  ["source with a lone surrogate", { ...ok, source: "a\ud800" }, "source"],
  ["task_id a number", { ...ok, task_id: 12 }, "task_id"],
  ["agent_id empty", { ...ok, agent_id: "" }, "agent_id"],
  ["id not a UUID", { ...ok, id: "abc" }, "id"],
  ["timestamp not ISO", { ...ok, timestamp: "last tuesday" }, "timestamp"],
  ["timestamp impossible", { ...ok, timestamp: "2026-02-31T25:00:00Z" }, "timestamp"],
  ["data an array", { ...ok, data: [1, 2] }, "data"],
  ["data a string", { ...ok, data: '{"a":1}' }, "data"],
  ["data holding a function", { ...ok, data: { f: () => 1 } }, "data.f"],
  ["data holding a symbol", { ...ok, data: { s: Symbol("x") } }, "data.s"],
  ["data holding a bigint", { ...ok, data: { n: 10n } }, "data.n"],
  ["data holding NaN", { ...ok, data: { list: [1, Number.NaN] } }, "data.list[1]"],
  ["data holding Infinity", { ...ok, data: { x: Infinity } }, "data.x"],
  ["data holding a Date", { ...ok, data: { when: new Date() } }, "data.when"],
  ["data holding a Map", { ...ok, data: { m: new Map() } }, "data.m"],
  ["data holding undefined in an array", { ...ok, data: { list: [undefined] } }, "data.list[0]"],
  ["circular data", { ...ok, data: circular }, "data.self"],
  ["data nested too deep", { ...ok, data: deepRoot }, "data" + ".next".repeat(EVENT_LIMITS.maxDataDepth)],
  ["data over the size limit", { ...ok, data: { blob: "x".repeat(EVENT_LIMITS.maxDataBytes) } }, "data"],
];

describe.each(ENGINES)("bad input on $name", (engine) => {
  it.each(cases)("refuses %s, naming the field, and writes nothing", async (_name, input, field) => {
    const log = await engine.openLog();
    // @ts-expect-error -- deliberately untyped input, as a JavaScript caller could pass
    const attempt = log.logEvent(input);
    await expect(attempt).rejects.toMatchObject({
      name: "SwarmError",
      code: "INVALID_EVENT",
      status: 400,
      details: { field },
    });
    await expect(attempt).rejects.toThrow(field);
    const count = async (table: string) =>
      Number(Object.values((await engine.sql(log, `SELECT COUNT(*) FROM ${table}`))[0] ?? {})[0]);
    expect(await count("event_log")).toBe(0);
    expect(await count("event_counts_hourly")).toBe(0);
  });

  it("drops undefined properties of data, as JSON does, and stores the rest", async () => {
    const log = await engine.openLog();
    const stored = await log.logEvent({ ...ok, data: { kept: 1, dropped: undefined } });
    expect((await log.getEvent(stored.id))?.data).toStrictEqual({ kept: 1 });
  });

  it("measures the size limit in UTF-8 bytes, not characters", async () => {
    const log = await engine.openLog();
    // Each "é" is two bytes: just under the limit in characters, over it in bytes.
    const wide = "é".repeat(EVENT_LIMITS.maxDataBytes / 2);
    await expect(log.logEvent({ ...ok, data: { wide } })).rejects.toMatchObject({
      details: { field: "data" },
    });
    const fits = "é".repeat(EVENT_LIMITS.maxDataBytes / 2 - 20);
    await expect(log.logEvent({ ...ok, data: { fits } })).resolves.toMatchObject({ seq: 1 });
  });
});
