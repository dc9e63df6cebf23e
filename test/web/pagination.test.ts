/**
 * Every list answer comes a page at a time (issue 13): a default and a maximum page size, a
 * cursor that walks every item once even while items are added, and a null cursor at the end.
 * Pages of the dashboard are bounded the same way, with links to the next.
 */
import { describe, expect, it } from "vitest";
import { buildTestApp, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

const HTML = { accept: "text/html" };

type Options = Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine">;
type AnyApp = TestApp<EngineName>;

async function getJson(t: AnyApp, url: string, headers: Record<string, string> = t.operator): Promise<Json> {
  const response = await t.app.inject({ method: "GET", url, headers });
  expect(response.statusCode, `${url}: ${response.body}`).toBe(200);
  return response.json<Json>();
}

/** A 400 that names the query parameter at fault. */
async function expectRefused(t: AnyApp, url: string, field: string) {
  const response = await t.app.inject({ method: "GET", url, headers: t.operator });
  expect(response.statusCode, url).toBe(400);
  expect(response.json<Json>().error, url).toMatchObject({
    code: "VALIDATION_FAILED",
    message: expect.stringContaining(field) as string,
    details: { field: `querystring.${field}` },
  });
}

/**
 * Follow `next_cursor` from `first` to the end, calling `between` after each page (to add items
 * meanwhile); the items of every page in order, and how many pages there were.
 */
async function walk(
  first: string,
  next: (cursor: string | number) => string,
  key: string,
  read: (url: string) => Promise<Json>,
  between: (page: number) => Promise<void> = async () => undefined,
) {
  const items: Json[] = [];
  let url: string | undefined = first;
  let pages = 0;
  while (url !== undefined) {
    const page = await read(url);
    pages += 1;
    expect(page.next_cursor === null || page[key].length > 0, "a cursor never leads past the end").toBe(true);
    items.push(...page[key]);
    await between(pages);
    url = page.next_cursor === null ? undefined : next(page.next_cursor);
    if (pages > 100) throw new Error("the walk does not end");
  }
  return { items, pages };
}

describe.each(ENGINES)("GET /api/agents on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  it("answers a client that sends no limit with the first 50 and a cursor, and refuses bad limits and cursors by name", async () => {
    const t = await build();
    for (let i = 0; i < 52; i += 1) await t.agent(`agent-${i}`);
    const first = await getJson(t, "/api/agents");
    expect(first.agents).toHaveLength(50);
    expect(first.agents[0].name).toBe("agent-0");
    expect(first.agents[0].stats).toMatchObject({ bids: 0, wins: 0 });
    expect(first.next_cursor).toEqual(expect.any(String));
    const rest = await getJson(t, `/api/agents?cursor=${first.next_cursor as string}`);
    expect(rest.agents.map((a: Json) => a.name)).toEqual(["agent-50", "agent-51"]);
    expect(rest.next_cursor).toBeNull();
    for (const limit of ["0", "201", "1.5", "many"])
      await expectRefused(t, `/api/agents?limit=${limit}`, "limit");
    await expectRefused(t, "/api/agents?cursor=-1", "cursor");
    await expectRefused(t, "/api/agents?status=asleep", "status");
  });

  it("walks every agent exactly once in the order they registered, agents registering meanwhile included", async () => {
    const t = await build();
    const names: string[] = [];
    const register = async (name: string) => {
      await t.agent(name);
      names.push(name);
    };
    for (let i = 0; i < 10; i += 1) await register(`first-${i}`);
    const { items, pages } = await walk(
      "/api/agents?limit=3",
      (cursor) => `/api/agents?limit=3&cursor=${cursor}`,
      "agents",
      (url) => getJson(t, url),
      async (page) => {
        if (page <= 2) await register(`meanwhile-${page}`);
      },
    );
    expect(items.map((agent) => agent.name)).toEqual(names);
    // 12 agents in pages of 3: the fourth page is the last, and says so.
    expect(pages).toBe(4);
  });

  it("filters by status, paging within it", async () => {
    const t = await build();
    const agents = [];
    for (let i = 0; i < 5; i += 1) agents.push(await t.agent(`agent-${i}`));
    // All but two go silent past the heartbeat timeout.
    t.clock.advance(31_000);
    for (const agent of [agents[1]!, agents[3]!]) {
      await t.app.inject({ method: "POST", url: `/api/agents/${agent.id}/heartbeat`, headers: agent.auth });
    }
    await t.tick();
    const { items } = await walk(
      "/api/agents?status=offline&limit=2",
      (cursor) => `/api/agents?status=offline&limit=2&cursor=${cursor}`,
      "agents",
      (url) => getJson(t, url),
    );
    expect(items.map((agent) => agent.name)).toEqual(["agent-0", "agent-2", "agent-4"]);
    expect((await getJson(t, "/api/agents?status=idle")).agents.map((a: Json) => a.name)).toEqual([
      "agent-1",
      "agent-3",
    ]);
  });
});

describe.each(ENGINES)("GET /api/tasks on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  it("walks every task once, newest first, while tasks are posted between pages, and ends with a null cursor", async () => {
    const t = await build();
    const ids: string[] = [];
    for (let i = 0; i < 6; i += 1) ids.push(await t.task({ description: `task ${i}` }));
    const { items, pages } = await walk(
      "/api/tasks?limit=3",
      (cursor) => `/api/tasks?limit=3&cursor=${cursor}`,
      "tasks",
      (url) => getJson(t, url),
      async () => {
        await t.task({ description: "posted meanwhile" });
      },
    );
    // Newer tasks are before the cursor: a walk sees those there when it began, once each.
    expect(items.map((task) => task.id)).toEqual([...ids].reverse());
    // Six in pages of three: the second page is full and is the last; its cursor says so.
    expect(pages).toBe(2);
    await expectRefused(t, "/api/tasks?limit=201", "limit");
  });
});

describe.each(ENGINES)("GET /api/tasks/:id/events on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  async function longTask(t: AnyApp, events: number) {
    const taskId = await t.task();
    await t.eventLog.logEvents(
      Array.from({ length: events }, (_, i) => ({
        event_type: "tool.called",
        source: "worker",
        task_id: taskId,
        data: { tool: "step", n: i },
      })),
    );
    return taskId;
  }

  it("answers a client that sends no limit with the first 100, oldest first, and a cursor", async () => {
    const t = await build();
    const taskId = await longTask(t, 250);
    const page = await getJson(t, `/api/tasks/${taskId}/events`);
    expect(page.events).toHaveLength(100);
    expect(page.events[0].event_type).toBe("task.created");
    expect(page.next_cursor).toBe(page.events[99].seq);
    for (const limit of ["0", "1001"])
      await expectRefused(t, `/api/tasks/${taskId}/events?limit=${limit}`, "limit");
    await expectRefused(t, `/api/tasks/${taskId}/events?after_seq=-1`, "after_seq");
    await expectRefused(t, `/api/tasks/${taskId}/events?after_seq=1e40`, "after_seq");
  });

  it("walks the whole timeline exactly once, in order, events arriving meanwhile included", async () => {
    const t = await build();
    const taskId = await longTask(t, 95);
    const { items, pages } = await walk(
      `/api/tasks/${taskId}/events?limit=40`,
      (cursor) => `/api/tasks/${taskId}/events?limit=40&after_seq=${cursor}`,
      "events",
      (url) => getJson(t, url),
      async (page) => {
        if (page === 1)
          await t.eventLog.logEvent({ event_type: "tool.completed", source: "worker", task_id: taskId });
      },
    );
    const expected = (await t.eventLog.getTaskEvents(taskId)).map((event) => event.seq);
    expect(expected).toHaveLength(98); // created, bidding, 95 tool calls, 1 meanwhile
    expect(items.map((event) => event.seq)).toEqual(expected);
    expect(pages).toBe(3);
  });

  it("ends a page with a null cursor when only a sealed bid follows it, as if there were none", async () => {
    const t = await build({ rules: { closeWhenAllBid: false } });
    const reader = await t.agent("reader");
    const rival = await t.agent("rival");
    const taskId = await t.task();
    const visible = (await getJson(t, `/api/tasks/${taskId}/events`, reader.auth)).events.length;
    await t.bid(rival, taskId, 7);
    const page = await getJson(t, `/api/tasks/${taskId}/events?limit=${visible}`, reader.auth);
    expect(page.events).toHaveLength(visible);
    expect(page.next_cursor).toBeNull();
    // The operator sees the bid, a page further on.
    const operator = await getJson(t, `/api/tasks/${taskId}/events?limit=${visible}`);
    expect(operator.next_cursor).toBe(operator.events.at(-1).seq);
  });
});

describe.each(ENGINES)("a task's bids on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  it("walk by round then agent, each agent's bid once even when it is replaced between pages; the open round sealed from other agents", async () => {
    const t = await build({ rules: { closeWhenAllBid: false } });
    const bidders: Awaited<ReturnType<AnyApp["agent"]>>[] = [];
    for (let i = 0; i < 5; i += 1) bidders.push(await t.agent(`bidder-${i}`));
    const taskId = await t.task();
    for (const [i, bidder] of bidders.entries()) await t.bid(bidder, taskId, 100 + i);
    const { items, pages } = await walk(
      `/api/tasks/${taskId}/bids?limit=2`,
      (cursor) => `/api/tasks/${taskId}/bids?limit=2&cursor=${encodeURIComponent(cursor)}`,
      "bids",
      (url) => getJson(t, url),
      async (page) => {
        // The first bidder, already seen, bids again: it keeps its place, so it is not seen twice.
        if (page === 1) expect((await t.bid(bidders[0]!, taskId, 50)).statusCode).toBe(201);
      },
    );
    expect(items.map((bid) => bid.agent_id)).toEqual(bidders.map((bidder) => bidder.id).sort());
    expect(pages).toBe(3);

    const asBidder = await getJson(t, `/api/tasks/${taskId}/bids`, bidders[2]!.auth);
    expect(asBidder).toEqual({
      bids: [expect.objectContaining({ agent_id: bidders[2]!.id, bid_sats: 102 })],
      bids_sealed: 4,
      next_cursor: null,
    });
    const detail = await getJson(t, `/api/tasks/${taskId}`, bidders[2]!.auth);
    expect(detail).toMatchObject({
      bids: [{ agent_id: bidders[2]!.id }],
      bids_sealed: 4,
      bids_next_cursor: null,
    });
    await expectRefused(t, `/api/tasks/${taskId}/bids?limit=1001`, "limit");
    await expectRefused(t, `/api/tasks/${taskId}/bids?cursor=nope`, "cursor");
  });

  it("GET /api/tasks/:id shows the first 100 and a cursor to the rest", async () => {
    const t = await build();
    const taskId = await t.task();
    const now = t.clock.now().toISOString();
    for (let i = 0; i < 130; i += 1) {
      const id = `bidder-${String(i).padStart(3, "0")}`;
      await t.sql(
        "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES (?, ?, '[]', 1, 'idle', ?, ?)",
        id,
        id,
        now,
        now,
      );
      await t.sql(
        "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at) VALUES (?, 1, ?, ?, ?, ?)",
        taskId,
        id,
        10 + i,
        i + 1,
        now,
      );
    }
    const detail = await getJson(t, `/api/tasks/${taskId}`);
    expect(detail.bids).toHaveLength(100);
    expect(detail.bids_next_cursor).toBe(`1.bidder-099`);
    const rest = await getJson(t, `/api/tasks/${taskId}/bids?cursor=${detail.bids_next_cursor as string}`);
    expect(rest.bids.map((bid: Json) => bid.agent_id)).toEqual(
      Array.from({ length: 30 }, (_, i) => `bidder-${String(100 + i).padStart(3, "0")}`),
    );
    expect(rest.next_cursor).toBeNull();
  });
});

describe.each(ENGINES)("dashboard pages on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  const agentRows = (body: string) =>
    [...body.matchAll(/<li id="agent-([^"]+)" class="agent-row"/g)].map((m) => m[1]!);
  const nextLink = (body: string) =>
    /<a href="([^"]+)" rel="next">/.exec(body)?.[1]?.replaceAll("&amp;", "&");

  it("list agents 50 a page, busy, then idle, then offline, by name, with a next link that walks every one once", async () => {
    const t = await build({ apiKey: undefined });
    const names = new Map<string, string>();
    let busy = "";
    // Names out of order, and in mixed case: the list goes by name, ignoring case.
    for (let i = 0; i < 120; i += 1) {
      const name = `${i % 2 === 0 ? "Agent" : "agent"}-${String((i * 37) % 120).padStart(3, "0")}`;
      const agent = await t.agent(name, i === 7 ? { capabilities: ["rare"], max_concurrent: 1 } : {});
      names.set(agent.id, name);
      if (i === 7) {
        // The only agent able to bid wins at once and is busy.
        busy = agent.id;
        await t.bid(agent, await t.task({ required_capabilities: ["rare"] }), 5);
      }
    }
    expect((await t.coordinator.getAgent(busy))?.status).toBe("busy");

    const seen: string[] = [];
    let url: string | undefined = "/agents";
    let pages = 0;
    while (url !== undefined) {
      const page = await t.app.inject({ url, headers: HTML });
      expect(page.statusCode, url).toBe(200);
      const rows = agentRows(page.body);
      expect(rows.length).toBeLessThanOrEqual(50);
      seen.push(...rows);
      if (pages > 0) expect(page.body).toContain('<a href="/agents">first page</a>');
      url = nextLink(page.body);
      pages += 1;
    }
    expect(pages).toBe(3);
    expect(new Set(seen).size).toBe(120);
    expect(seen[0]).toBe(busy);
    const idle = seen.slice(1).map((id) => names.get(id)!.toLowerCase());
    expect(idle).toEqual([...idle].sort());
    const refused = await t.app.inject({ url: "/agents?after=sideways", headers: HTML });
    expect(refused.statusCode).toBe(400);
  });

  it("show a task's newest 100 events, with links back through older windows to the first, each event once", async () => {
    const t = await build({ apiKey: undefined });
    const taskId = await t.task();
    await t.eventLog.logEvents(
      Array.from({ length: 248 }, (_, i) => ({
        event_type: "tool.called",
        source: "worker",
        task_id: taskId,
        data: { tool: `step-${i}` },
      })),
    );
    const all = (await t.eventLog.getTaskEvents(taskId)).map((event) => event.seq);
    expect(all).toHaveLength(250);
    const timelineSeqs = (body: string) => {
      const list = /<ol id="timeline"[\s\S]*?<\/ol>/.exec(body)?.[0] ?? "";
      return [...list.matchAll(/<li id="ev-(\d+)"/g)].map((m) => Number(m[1]));
    };
    const link = (body: string, rel: string) =>
      new RegExp(`<a href="([^"]+)" rel="${rel}"`).exec(body)?.[1]?.replaceAll("&amp;", "&");

    const newest = await t.app.inject({ url: `/tasks/${taskId}`, headers: HTML });
    expect(timelineSeqs(newest.body)).toEqual(all.slice(-100));
    expect(newest.body).toContain('data-cap="100" data-keep="last"');
    expect(newest.body).not.toMatch(/rel="next"/);

    const windows = [timelineSeqs(newest.body)];
    let older = link(newest.body, "prev");
    while (older !== undefined) {
      const page = await t.app.inject({ url: older, headers: HTML });
      expect(page.statusCode).toBe(200);
      // A window paged to does not grow live: its socket says so.
      expect(page.body).toContain("paged=1");
      expect(page.body).toContain(`<a href="/tasks/${taskId}">newest</a>`);
      windows.unshift(timelineSeqs(page.body));
      older = page.body.includes('rel="prev" data-older-of="timeline" data-cursor="before_seq" hidden')
        ? undefined
        : link(page.body, "prev");
    }
    expect(windows.map((w) => w.length)).toEqual([50, 100, 100]);
    expect(windows.flat()).toEqual(all);

    // And forward again from the oldest window, by its newer link.
    const oldest = await t.app.inject({ url: `/tasks/${taskId}?after_seq=0`, headers: HTML });
    expect(timelineSeqs(oldest.body)).toEqual(all.slice(0, 100));
    const newer = await t.app.inject({ url: link(oldest.body, "next")!, headers: HTML });
    expect(timelineSeqs(newer.body)).toEqual(all.slice(100, 200));
  });

  it("show the lowest bids of a crowded auction and of each round, and count the rest", async () => {
    const t = await build({ apiKey: undefined, rules: { closeWhenAllBid: false } });
    const taskId = await t.task({ description: "crowded auction" });
    for (let i = 0; i < 24; i += 1) await t.bid(await t.agent(`bidder-${i}`), taskId, 500 - i);
    const overview = await t.app.inject({ url: "/", headers: HTML });
    const auction = /<article class="auction" id="auction-[\s\S]*?<\/article>/.exec(overview.body)?.[0] ?? "";
    expect([...auction.matchAll(/class="sats">(\d+)&nbsp;sats/g)].map((m) => Number(m[1]))).toEqual([
      477, 478, 479, 480, 481,
    ]);
    expect(auction).toContain("and 19 higher bids");
    const page = await t.app.inject({ url: `/tasks/${taskId}`, headers: HTML });
    const bids = /<section id="bids"[\s\S]*?<\/section>/.exec(page.body)?.[0] ?? "";
    expect([...bids.matchAll(/class="sats">(\d+)&nbsp;sats/g)]).toHaveLength(20);
    expect(bids).toContain("▲ leading");
    expect(bids).toContain("and 4 higher bids in this round");
  });
});
