import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { buildTestApp, OPERATOR_KEY, type EngineName } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

type Options = Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine">;

/** The app under test on `engine` (open mode unless told otherwise), listening on a free port. */
async function listening(engine: EngineName, options: Options = {}) {
  const t = await buildTestApp<EngineName>({ apiKey: undefined, ...options, engine });
  await t.app.listen({ host: "127.0.0.1", port: 0 });
  const { port } = t.app.server.address() as AddressInfo;
  return { ...t, port };
}

/** A live page's socket, keeping every message it received. */
function openLive(
  port: number,
  query: string,
  headers: Record<string, string> = {},
  options: WebSocket.ClientOptions = {},
) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/live?${query}`, { ...options, headers });
  const messages: string[] = [];
  const waiters: (() => void)[] = [];
  socket.on("message", (data: Buffer) => {
    messages.push(data.toString());
    for (const wake of waiters.splice(0)) wake();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return {
    socket,
    messages,
    closed,
    /** Wait until some message satisfies `test`. */
    async until(test: (message: string) => boolean, timeoutMs = 3000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = messages.find(test);
        if (found !== undefined) return found;
        if (Date.now() > deadline)
          throw new Error(
            `no such message in ${messages.length}: ${messages.join("\n---\n").slice(0, 2000)}`,
          );
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 50);
        });
      }
    },
    count(pattern: RegExp) {
      return messages.reduce((sum, message) => sum + (message.match(pattern)?.length ?? 0), 0);
    },
  };
}

const seqMarker = (message: string) => Number(/id="live-seq" data-seq="(\d+)"/.exec(message)?.[1]);

describe.each(ENGINES)("live dashboard pushes on $name", ({ name: engine }) => {
  it("send a page its state on connect, then new feed rows and summaries as out-of-band swaps", async () => {
    const t = await listening(engine);
    const live = openLive(t.port, "view=overview");
    const first = await live.until(() => true);
    expect(first).toContain('id="counters" class="counters" hx-swap-oob="true"');
    expect(first).toContain('id="charts" class="charts" hx-swap-oob="true"');
    expect(seqMarker(first)).toBe(await t.eventLog.latestSeq());

    const taskId = await t.task({ description: "watch <me>" });
    const update = await live.until((m) => m.includes("afterbegin:#feed"));
    expect(update).toContain(`href="/tasks/${taskId}"`);
    expect(update).toContain("watch &lt;me&gt;");
    expect(update).not.toContain("watch <me>");
    const summary = await live.until((m) => m.includes('id="auctions"') && m.includes(taskId));
    expect(summary).toContain("No bids yet.");
    expect(seqMarker(live.messages.at(-1) ?? "")).toBe(await t.eventLog.latestSeq());
    live.socket.close();
  });

  it("render every page's components alone, as out-of-band swaps with their ids, escaping agent and task text", async () => {
    const t = await listening(engine);
    const xss = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`;
    const agent = await t.agent(xss, { capabilities: [] });
    const taskId = await t.task({ description: xss });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/bids`,
      headers: agent.auth,
      payload: { bid_sats: 9 },
    });
    await t.app.inject({ method: "POST", url: `/api/tasks/${taskId}/start`, headers: agent.auth });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/tools`,
      headers: agent.auth,
      payload: { tool: xss, phase: "called" },
    });
    const views: [string, string[]][] = [
      ["view=overview", ["counters", "auctions", "agent-list", "charts", "feed"]],
      ["view=tasks", ["task-list"]],
      [`view=task&task_id=${taskId}`, [`task-${taskId}`, "bids", "tool-calls", "timeline"]],
      ["view=agents", ["agent-table"]],
      [`view=agent&agent_id=${agent.id}`, [`agent-${agent.id}`, "agent-tasks", "event-rows"]],
      ["view=events&type=tool.called", ["event-counts", "event-rows"]],
    ];
    for (const [query, ids] of views) {
      const live = openLive(t.port, query);
      const first = await live.until(() => true);
      for (const id of ids)
        expect(first, `${query} #${id}`).toMatch(new RegExp(`id="${id}"[^>]*hx-swap-oob="true"`));
      expect(first, query).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
      expect(first, query).not.toContain("<script>alert");
      expect(first, query).not.toContain("<img src=x");
      live.socket.close();
    }
  });

  it("replay exactly what a reconnecting page missed, even events still waiting for a batch", async () => {
    // A long batch interval keeps the events below in flight while the page connects.
    const t = await listening(engine, { live: { flushIntervalMs: 400 } });
    // One flush now, so the next cannot come for 400 ms.
    await t.eventLog.logEvent({ event_type: "deploy.started", source: "ci" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await t.eventLog.logEvents(
      [1, 2, 3].map((n) => ({ event_type: "deploy.finished", source: "ci", data: { n } })),
    );
    const seen = await t.eventLog.latestSeq();
    await t.eventLog.logEvents(
      [4, 5].map((n) => ({ event_type: "deploy.finished", source: "ci", data: { n } })),
    );
    const live = openLive(t.port, `view=overview&after_seq=${seen}`);
    const first = await live.until(() => true);
    expect([...first.matchAll(/<li id="ev-(\d+)"/g)].map((m) => Number(m[1]))).toEqual([seen + 2, seen + 1]);
    await t.eventLog.logEvent({ event_type: "deploy.finished", source: "ci", data: { n: 6 } });
    await live.until((m) => m.includes(`id="ev-${seen + 3}"`), 3000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const seq of [seen + 1, seen + 2, seen + 3])
      expect(live.count(new RegExp(`id="ev-${seq}"`, "g")), `seq ${seq}`).toBe(1);
    for (let seq = 1; seq <= seen; seq++) expect(live.count(new RegExp(`id="ev-${seq}"`, "g"))).toBe(0);
    live.socket.close();
  });

  it("re-renders the whole feed when a page missed more than it keeps", async () => {
    const t = await listening(engine);
    await t.eventLog.logEvents(
      Array.from({ length: 80 }, (_, n) => ({ event_type: "deploy.finished", source: "ci", data: { n } })),
    );
    const live = openLive(t.port, "view=overview&after_seq=1");
    const first = await live.until(() => true);
    expect(first).toContain('<ol id="feed" class="events feed" data-cap="50" hx-swap-oob="true"');
    expect([...first.matchAll(/<li id="ev-(\d+)"/g)]).toHaveLength(50);
    expect(first).toContain(`id="ev-${await t.eventLog.latestSeq()}"`);
    live.socket.close();
  });

  it("pushes at a bounded rate however fast events arrive", async () => {
    const t = await listening(engine, { live: { flushIntervalMs: 50, summaryIntervalMs: 500 } });
    const live = openLive(t.port, "view=overview");
    await live.until(() => true);
    const started = Date.now();
    for (let i = 0; i < 40; i++) {
      await t.eventLog.logEvents(
        Array.from({ length: 50 }, (_, n) => ({ event_type: "deploy.finished", source: "ci", data: { n } })),
      );
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 600));
    const elapsed = Date.now() - started;
    const updates = live.messages.length - 1;
    const summaries = live.count(/id="counters"/g) - 1;
    // 2,000 events became at most one message per flush interval, summaries at most one per 500 ms.
    expect(updates).toBeGreaterThan(0);
    expect(updates).toBeLessThanOrEqual(Math.ceil(elapsed / 50) + 1);
    expect(summaries).toBeLessThanOrEqual(Math.ceil(elapsed / 500) + 1);
    expect(live.messages.at(-1)).toContain(`data-seq="${await t.eventLog.latestSeq()}"`);
    live.socket.close();
  });

  it("update a task page: timeline rows appended, card and bids replaced", async () => {
    const t = await listening(engine);
    const agent = await t.agent("solo", { capabilities: [] });
    const taskId = await t.task();
    const live = openLive(t.port, `view=task&task_id=${taskId}`);
    await live.until(() => true);
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/bids`,
      headers: agent.auth,
      payload: { bid_sats: 42 },
    });
    const update = await live.until((m) => m.includes("beforeend:#timeline"));
    expect(update).toContain(">bid.submitted<");
    expect(update).toContain(
      `id="task-${taskId}" class="panel task-card" data-status="assigned" hx-swap-oob="true"`,
    );
    expect(update).toMatch(/id="bids" class="panel" hx-swap-oob="true">[\s\S]*42&nbsp;sats/);
    live.socket.close();
  });

  it("keep a window paged to and a later page of agents as they are, while their records stay live", async () => {
    const t = await listening(engine);
    const agent = await t.agent("solo", { capabilities: [] });
    await t.agent("second");
    const taskId = await t.task();
    const paged = openLive(t.port, `view=task&task_id=${taskId}&paged=1`);
    const first = await paged.until(() => true);
    expect(first).not.toContain('id="timeline"');
    await t.bid(agent, taskId, 42);
    const update = await paged.until((m) => m.includes('id="bids"') && m.includes("42&nbsp;sats"));
    expect(update).toContain(`id="task-${taskId}"`);
    expect(update).not.toContain("#timeline");
    paged.socket.close();

    const later = openLive(t.port, `view=agents&after=${encodeURIComponent(`idle.1.solo`)}`);
    await later.until((m) => m.includes('id="agent-table"'));
    const newcomer = await t.agent("newcomer");
    const pushed = await later.until((m) => m.includes(`id="agent-${newcomer.id}"`));
    expect(pushed).not.toContain("afterbegin:#agent-rows");
    later.socket.close();
  });

  it("prepend new tasks and agents to their lists and replace the rows that changed", async () => {
    const t = await listening(engine);
    const tasks = openLive(t.port, "view=tasks");
    const agents = openLive(t.port, "view=agents");
    await tasks.until(() => true);
    await agents.until(() => true);
    const agent = await t.agent("newcomer");
    const joined = await agents.until((m) => m.includes("afterbegin:#agent-rows"));
    expect(joined).toContain(`id="agent-${agent.id}"`);
    const taskId = await t.task();
    const created = await tasks.until((m) => m.includes("afterbegin:#task-rows"));
    expect(created).toContain(`id="task-${taskId}"`);
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/cancel`,
      headers: t.operator,
      payload: {},
    });
    const changed = await tasks.until((m) =>
      m.includes(`id="task-${taskId}" class="task-row" hx-swap-oob="true"`),
    );
    expect(changed).toContain("status-cancelled");
    tasks.socket.close();
    agents.socket.close();
  });

  it("tail the events page with its own filter", async () => {
    const t = await listening(engine);
    const live = openLive(t.port, "view=events&type=deploy.finished&q=needle");
    await live.until(() => true);
    await t.eventLog.logEvents([
      { event_type: "deploy.finished", source: "ci", data: { note: "hay" } },
      { event_type: "deploy.started", source: "ci", data: { note: "needle" } },
      { event_type: "deploy.finished", source: "ci", data: { note: "NEEDLE here" } },
    ]);
    const update = await live.until((m) => m.includes("afterbegin:#event-rows"));
    const rows = [...update.matchAll(/<li id="ev-(\d+)"/g)].map((m) => Number(m[1]));
    expect(rows).toEqual([await t.eventLog.latestSeq()]);
    live.socket.close();
  });

  it("tail by event_type, the Python-era name of type, and refuse a filter the tail does not take", async () => {
    const t = await listening(engine);
    const live = openLive(t.port, "view=events&event_type=deploy.finished");
    await live.until(() => true);
    await t.eventLog.logEvents([
      { event_type: "deploy.started", source: "ci" },
      { event_type: "deploy.finished", source: "ci" },
    ]);
    const update = await live.until((m) => m.includes("afterbegin:#event-rows"));
    expect([...update.matchAll(/<li id="ev-(\d+)"/g)].map((m) => Number(m[1]))).toEqual([
      await t.eventLog.latestSeq(),
    ]);
    live.socket.close();
    const refused = openLive(t.port, "view=events&event_typ=deploy.finished");
    const status = await new Promise<number | undefined>((resolve) => {
      refused.socket.once("unexpected-response", (request, response) => {
        request.destroy();
        resolve(response.statusCode);
      });
      refused.socket.once("open", () => resolve(undefined));
    });
    expect(status).toBe(400);
  });

  it("tell pages to reconnect (1012) when the server shuts down", async () => {
    const t = await listening(engine);
    const live = openLive(t.port, "view=overview");
    await live.until(() => true);
    await t.app.close();
    expect((await live.closed).code).toBe(1012);
  });

  it("shuts down even when a page never answers the close frame", { timeout: 10_000 }, async () => {
    const t = await listening(engine);
    const live = openLive(t.port, "view=overview");
    await live.until(() => true);
    // The page stops reading: the close frame sits unread and no answer comes back.
    (live.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    await t.app.close(); // without the server's grace, this waits ws's 30 s close timeout
    expect(t.app.websocketServer.clients.size).toBe(0);
  });

  it(
    "shuts down even when a page tries to reconnect while it is shutting down",
    { timeout: 10_000 },
    async () => {
      const t = await listening(engine);
      const live = openLive(t.port, "view=overview");
      await live.until(() => true);
      // One page never answers the close frame, which keeps shutdown in its grace period...
      (live.socket as unknown as { _socket: { pause(): void } })._socket.pause();
      const closing = t.app.close();
      await new Promise((resolve) => setTimeout(resolve, 200));
      // ...while another page's reconnect arrives: refused, and its connection ended.
      const late = openLive(t.port, "view=overview");
      const status = await new Promise<number>((resolve) =>
        late.socket.on("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0)),
      );
      expect(status).toBe(503);
      await closing; // before the fix, the refused socket held this open for ever
    },
  );

  it("counts a live tail of a text search as an expensive read, refusing it with 429 once the budget is spent", async () => {
    const t = await listening(engine, { expensiveRateLimitPerMinute: 1 });
    const overview = openLive(t.port, "view=overview&q=report"); // q means nothing here: not a search
    await overview.until(() => true);
    const tail = openLive(t.port, "view=events&q=report");
    await tail.until(() => true);
    const again = openLive(t.port, "view=events&q=report");
    const status = await new Promise<number>((resolve) => {
      again.socket.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      again.socket.on("open", () => resolve(101));
    });
    expect(status).toBe(429);
    overview.socket.close();
    tail.socket.close();
  });

  it("refuses pages from another origin, and viewers without a login when a key is set", async () => {
    const open = await listening(engine);
    const foreign = openLive(open.port, "view=overview", { origin: "http://evil.example" });
    const refusal = await new Promise<number>((resolve) =>
      foreign.socket.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)),
    );
    expect(refusal).toBe(403);
    const keyed = await listening(engine, { apiKey: "operator-key-for-tests-0123456789" });
    const anonymous = openLive(keyed.port, "view=overview");
    const status = await new Promise<number>((resolve) =>
      anonymous.socket.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)),
    );
    expect(status).toBe(401);
  });

  it("cap anonymous pages by IP address: one address's pages beyond the cap are refused while another address and a logged-in operator still get theirs", async () => {
    const cap = 3;
    const t = await listening(engine, {
      apiKey: OPERATOR_KEY,
      dashboardPublic: true,
      maxSocketsPerClient: cap,
    });
    const login = await t.app.inject({ url: "/login", headers: { accept: "text/html" } });
    const csrf = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
    const loggedIn = await t.app.inject({
      method: "POST",
      url: "/login",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        cookie: `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value}`,
      },
      payload: new URLSearchParams({ _csrf: csrf, key: OPERATOR_KEY }).toString(),
    });
    const session = `swarm_session=${loggedIn.cookies.find((c) => c.name === "swarm_session")?.value}`;

    // Every page first hears its state; a refused one is closed before it hears anything.
    const firstMessage = (page: ReturnType<typeof openLive>) =>
      Promise.race([page.closed.then(() => false), page.until(() => true).then(() => true)]);
    const crowd = Array.from({ length: cap + 2 }, () => openLive(t.port, "view=overview"));
    const admitted = await Promise.all(crowd.map(firstMessage));
    expect(admitted.filter(Boolean)).toHaveLength(cap);
    for (const page of crowd.filter((_, i) => !admitted[i])) {
      const { code, reason } = await page.closed;
      expect(code).toBe(1013);
      expect(reason).toContain("SWARM_MAX_SOCKETS_PER_CLIENT");
    }
    // A made-up session cookie is no login: it counts against its address like any anonymous page.
    const forged = openLive(t.port, "view=overview", { cookie: `swarm_session=1.${"A".repeat(43)}` });
    expect(await firstMessage(forged)).toBe(false);
    // Linux answers on all of 127.0.0.0/8: another address on this machine is another client.
    const neighbour = openLive(t.port, "view=overview", {}, { localAddress: "127.0.0.2" });
    const operator = openLive(t.port, "view=overview", { cookie: session });
    expect(await Promise.all([neighbour, operator].map(firstMessage))).toEqual([true, true]);

    const taskId = await t.task({ description: "still live" });
    const live = [...crowd.filter((_, i) => admitted[i]), neighbour, operator];
    for (const page of live) await page.until((m) => m.includes(taskId));
    expect((await t.app.metrics.refusedWebsockets.get()).values).toEqual([
      { labels: { limit: "client" }, value: 3 },
    ]);
    for (const page of live) page.socket.close();
  });
});

describe.each(ENGINES)("catching up on $name", ({ name: engine }) => {
  it("serves a task page that missed a few events (its catch-up once asked for more than a page)", async () => {
    const t = await listening(engine);
    const taskId = await t.task();
    for (let n = 0; n < 6; n++) {
      await t.eventLog.logEvent({ event_type: "ops.note", source: "ops", task_id: taskId, data: { n } });
    }
    const live = openLive(
      t.port,
      `view=task&task_id=${taskId}&after_seq=${(await t.eventLog.latestSeq()) - 5}`,
    );
    const first = await live.until(() => true);
    expect(first).toContain(`id="task-${taskId}"`);
    expect(seqMarker(first)).toBe(await t.eventLog.latestSeq());
    // The five it missed, as rows added to its timeline.
    expect(live.count(/ops\.note/g)).toBeGreaterThanOrEqual(5);
    live.socket.close();
    expect((await live.closed).code).not.toBe(1011);
  });
});

describe.each(ENGINES)("live pushes to a public dashboard on $name", ({ name: engine }) => {
  it("do not move an agent's page when it places a sealed bid", async () => {
    const t = await listening(engine, { apiKey: OPERATOR_KEY, dashboardPublic: true });
    const bidder = await t.agent("bidder");
    await t.agent("other"); // eligible and silent, so the auction stays open
    const taskId = await t.task({ auction_ms: 60_000 });
    const page = openLive(t.port, `view=agent&agent_id=${bidder.id}`);
    await page.until(() => true);
    const before = page.messages.length;
    await t.bid(bidder, taskId, 7777);
    // Something the viewer may see about the same agent, a while later: the only push.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await t.eventLog.logEvent({ event_type: "ops.note", source: "ops", agent_id: bidder.id, data: {} });
    await page.until((message) => message.includes("ops.note"));
    expect(page.messages.length - before).toBe(1);
    // As a page prints sats; bare digits turn up inside ids.
    expect(page.messages.join("")).not.toContain("7,777");
  });

  it("never carry a sealed bid's amount to an anonymous viewer, only how many bids there are", async () => {
    // Summaries are refreshed every 200 ms: a sealed bid itself moves no page (see below).
    const t = await listening(engine, {
      apiKey: OPERATOR_KEY,
      dashboardPublic: true,
      live: { idleRefreshMs: 200 },
    });
    const [first, second] = [await t.agent("first"), await t.agent("second")];
    await t.agent("third"); // eligible but silent, so the auction stays open
    const taskId = await t.task({ auction_ms: 60_000 });
    const pages = ["view=overview", `view=task&task_id=${taskId}`, "view=events"].map((query) =>
      openLive(t.port, query),
    );
    for (const page of pages) await page.until(() => true);
    await t.bid(first, taskId, 6173);
    await t.bid(second, taskId, 5299);
    await pages[0]!.until((message) => message.includes("2 sealed bids"));
    await pages[1]!.until((message) => message.includes("2 sealed bids"));
    const latest = await t.eventLog.latestSeq();
    for (const page of pages) {
      await page.until((message) => seqMarker(message) >= latest);
      const everything = page.messages.join("");
      // As a page prints sats; bare digits turn up inside ids.
      for (const amount of ["6,173", "5,299"]) expect(everything).not.toContain(amount);
    }
  });
});
