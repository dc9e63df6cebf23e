/**
 * Who reads what: sealed bids stay sealed until the auction closes, and what an agent or its
 * tools produced is seen by that agent and the operator only — through every route, export and
 * page, and the stream.
 */
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { buildTestApp, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";
import { eventually } from "../helpers/stack.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

const HTML = { accept: "text/html" };
/** A bid amount, and whether a body shows it: as JSON's bid_sats (plain or CSV-quoted) or as a page prints sats. */
const RIVAL_BID = 4817;
// Not the bare digits: they turn up inside ids (UUIDs are hex).
const showsRivalBid = (body: string) => /bid_sats\W{1,6}4817\b/.test(body) || body.includes("4,817");

type Options = Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine">;
type AnyApp = TestApp<EngineName>;

async function get(t: AnyApp, url: string, headers: Record<string, string> = {}) {
  return t.app.inject({ method: "GET", url, headers });
}

/** Three agents on a task; `honest` and `rival` have bid, `late` not, so the auction is still open. */
async function openAuction(t: AnyApp) {
  const honest = await t.agent("honest");
  const rival = await t.agent("rival");
  const late = await t.agent("late");
  const taskId = await t.task({ auction_ms: 10_000 });
  expect((await t.bid(honest, taskId, 900)).statusCode).toBe(201);
  expect((await t.bid(rival, taskId, RIVAL_BID)).statusCode).toBe(201);
  return { honest, rival, late, taskId };
}

/** Every place an agent or an API reader could read a bid from. */
async function apiReads(t: AnyApp, taskId: string, headers: Record<string, string>) {
  return [
    await get(t, `/api/tasks/${taskId}`, headers),
    await get(t, `/api/tasks/${taskId}/events`, headers),
    await get(t, "/api/events?type=bid.submitted", headers),
    await get(t, "/api/events?order=desc&limit=1000", headers),
    await get(t, "/api/events/export", headers),
    await get(t, "/api/events/export?format=csv", headers),
  ];
}

describe.each(ENGINES)("sealed bids on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  it("an agent sees only its own bid while the auction is open, through every API read and export", async () => {
    const t = await build();
    const { honest, rival, taskId } = await openAuction(t);
    for (const response of await apiReads(t, taskId, honest.auth)) {
      expect(response.statusCode).toBe(200);
      expect(showsRivalBid(response.body)).toBe(false);
    }
    // Not who bid either.
    const bidders = (await get(t, "/api/events?type=bid.submitted", honest.auth)).json<Json>().events;
    expect(bidders.map((e: Json) => e.agent_id)).not.toContain(rival.id);
    expect((await get(t, `/api/tasks/${taskId}`, honest.auth)).body).not.toContain(rival.id);
    const task = (await get(t, `/api/tasks/${taskId}`, honest.auth)).json<Json>();
    expect(task.bids).toEqual([expect.objectContaining({ agent_id: honest.id, bid_sats: 900 })]);
    expect(task.bids_sealed).toBe(1);
    const ownEvents = (await get(t, "/api/events?type=bid.submitted", honest.auth)).json<Json>();
    expect(ownEvents.events.map((e: Json) => e.agent_id)).toEqual([honest.id]);
  });

  it("does not count a bid in an agent's stats until its round has closed", async () => {
    const t = await build();
    const { honest, rival } = await openAuction(t);
    const statsOf = async () =>
      (await get(t, `/api/agents/${rival.id}`, honest.auth)).json<Json>().agent.stats as Json;
    expect(await statsOf()).toMatchObject({ bids: 0, wins: 0 });
    t.clock.advance(10_000);
    await t.tick();
    expect(await statsOf()).toMatchObject({ bids: 1, wins: 0 });
  });

  it("answers 'did B bid?' the same whether B bid or not: no cursor or page link gives a sealed bid away", async () => {
    const t = await build({ dashboardPublic: true });
    const { honest, rival, late, taskId } = await openAuction(t);
    const probe = async (agentId: string) =>
      (
        await get(
          t,
          `/api/events?type=bid.submitted&task_id=${taskId}&agent_id=${agentId}&limit=1`,
          honest.auth,
        )
      ).json<Json>();
    expect(await probe(rival.id)).toEqual({ events: [], next_cursor: null });
    expect(await probe(late.id)).toEqual(await probe(rival.id));
    // Newest first, too, and the public events page's older/newer links.
    const desc = await get(
      t,
      `/api/events?type=bid.submitted&agent_id=${rival.id}&order=desc&limit=1`,
      honest.auth,
    );
    expect(desc.json<Json>()).toEqual({ events: [], next_cursor: null });
    const page = (agentId: string) =>
      get(t, `/events?type=bid.submitted&agent_id=${agentId}&after_seq=0`, HTML).then((r) =>
        r.body.replaceAll(agentId, "AGENT"),
      );
    expect(await page(rival.id)).toEqual(await page(late.id));
  });

  it("refuses text search to readers who may not see every event's contents, so it cannot test what is sealed or withheld", async () => {
    const t = await build();
    const { honest, taskId } = await openAuction(t);
    for (const url of [`/api/events?task_id=${taskId}&q=4817`, "/api/events/export?q=4817"]) {
      const response = await get(t, url, honest.auth);
      expect(response.statusCode, url).toBe(403);
      expect(response.json<Json>().error).toMatchObject({
        code: "FORBIDDEN",
        details: { field: "querystring.q" },
      });
    }
    expect((await get(t, "/api/events?q=4817", t.operator)).json<Json>().events).toHaveLength(1);
  });

  it("the operator sees every bid while the auction is open", async () => {
    const t = await build();
    const { rival, taskId } = await openAuction(t);
    const task = (await get(t, `/api/tasks/${taskId}`, t.operator)).json<Json>();
    expect(task.bids.map((bid: Json) => bid.bid_sats).sort()).toEqual([4817, 900]);
    expect(task.bids_sealed).toBe(0);
    const events = (await get(t, "/api/events?type=bid.submitted", t.operator)).json<Json>();
    expect(events.events.map((e: Json) => e.agent_id)).toContain(rival.id);
  });

  it("reveals every bid to every reader once the auction has closed", async () => {
    const t = await build();
    const { honest, late, taskId } = await openAuction(t);
    t.clock.advance(10_000);
    await t.tick();
    expect((await t.coordinator.getTask(taskId))?.status).toBe("assigned");
    for (const reader of [honest, late]) {
      const task = (await get(t, `/api/tasks/${taskId}`, reader.auth)).json<Json>();
      expect(task.bids.map((bid: Json) => bid.bid_sats).sort()).toEqual([4817, 900]);
      expect(task.bids_sealed).toBe(0);
      const events = (await get(t, "/api/events?type=bid.submitted", reader.auth)).json<Json>();
      expect(events.events).toHaveLength(2);
    }
  });

  it("keeps the next round's bids sealed while the first round's stay revealed", async () => {
    const t = await build();
    const { honest, rival, late, taskId } = await openAuction(t);
    t.clock.advance(10_000);
    await t.tick();
    // The winner (honest, the lowest bid) leaves: the task goes to a second round.
    const left = await t.app.inject({
      method: "DELETE",
      url: `/api/agents/${honest.id}`,
      headers: t.operator,
    });
    expect(left.statusCode).toBe(200);
    expect(await t.coordinator.getTask(taskId)).toMatchObject({ status: "bidding", attempt: 2 });
    expect((await t.bid(rival, taskId, 3131)).statusCode).toBe(201);
    const seen = (await get(t, `/api/tasks/${taskId}`, late.auth)).json<Json>();
    expect(seen.bids.map((bid: Json) => [bid.attempt, bid.bid_sats]).sort()).toEqual([
      [1, 4817],
      [1, 900],
    ]);
    expect(seen.bids_sealed).toBe(1);
  });

  it("an anonymous viewer of a public dashboard sees how many bids there are, never who or how much", async () => {
    const t = await build({ dashboardPublic: true });
    const { taskId } = await openAuction(t);
    const pages = [
      "/",
      `/tasks/${taskId}`,
      "/tasks",
      "/events",
      "/events?type=bid.submitted",
      "/events/export",
      "/events/export?format=csv",
    ];
    for (const url of pages) {
      const response = await get(t, url, HTML);
      expect(response.statusCode, url).toBe(200);
      expect(showsRivalBid(response.body), url).toBe(false);
      expect(response.body, url).not.toContain("bid 900");
    }
    expect((await get(t, `/tasks/${taskId}`, HTML)).body).toContain("2 sealed bids");
    expect((await get(t, "/", HTML)).body).toContain("2 sealed bids");
  });

  it("the logged-in operator's dashboard shows the open auction's bids", async () => {
    const t = await build({ apiKey: undefined });
    const { taskId } = await openAuction(t);
    const page = await get(t, `/tasks/${taskId}`, HTML);
    expect(page.body).toContain("4,817");
    expect(page.body).not.toContain("sealed bid");
  });
});

describe.each(ENGINES)("least privilege for agents and public viewers on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  const SECRET_INPUT = "vault-token-7f3c9a";
  const SECRET_OUTPUT = "ssn-123-45-6789";
  const SECRET_RESULT = "the launch code is 0000";

  /** `owner` wins a task, reports a tool call with secrets in it, and completes with a secret result. */
  async function finishedTask(t: AnyApp) {
    const owner = await t.agent("owner");
    const other = await t.agent("other", { capabilities: ["unrelated"] });
    const taskId = await t.task({ auction_ms: 1000 });
    await t.bid(owner, taskId, 10);
    t.clock.advance(1000);
    await t.tick();
    expect((await t.coordinator.getTask(taskId))?.assigned_agent).toBe(owner.id);
    const steps = [
      ["start", {}],
      ["tools", { tool: "vault.read", phase: "completed", input: SECRET_INPUT, output: SECRET_OUTPUT }],
      ["complete", { result: SECRET_RESULT }],
    ] as const;
    for (const [step, payload] of steps) {
      const response = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${taskId}/${step}`,
        headers: owner.auth,
        payload,
      });
      expect(response.statusCode, step).toBeLessThan(300);
    }
    return { owner, other, taskId };
  }

  const secrets = [SECRET_INPUT, SECRET_OUTPUT, SECRET_RESULT];

  it("another agent sees that the task ran and finished, but none of its tool data or result", async () => {
    const t = await build();
    const { other, taskId } = await finishedTask(t);
    const reads = [...(await apiReads(t, taskId, other.auth)), await get(t, "/api/tasks", other.auth)];
    for (const response of reads) {
      expect(response.statusCode).toBe(200);
      for (const secret of secrets) expect(response.body).not.toContain(secret);
    }
    const task = (await get(t, `/api/tasks/${taskId}`, other.auth)).json<Json>().task;
    expect(task).toMatchObject({ status: "completed", result: null, withheld: ["result"] });
    const events = (await get(t, `/api/tasks/${taskId}/events`, other.auth)).json<Json>().events as Json[];
    const tool = events.find((event) => event.event_type === "tool.completed");
    expect(tool).toMatchObject({ data: { tool: "vault.read" }, withheld: ["data.input", "data.output"] });
    expect(events.find((event) => event.event_type === "task.completed")?.withheld).toEqual(["data.result"]);
  });

  it("the agent that ran the task and the operator see all of it", async () => {
    const t = await build();
    const { owner, taskId } = await finishedTask(t);
    for (const headers of [owner.auth, t.operator]) {
      const events = await get(t, `/api/tasks/${taskId}/events`, headers);
      for (const secret of secrets) expect(events.body).toContain(secret);
      expect(events.body).not.toContain("withheld");
      expect((await get(t, `/api/tasks/${taskId}`, headers)).json<Json>().task.result).toBe(SECRET_RESULT);
    }
  });

  it("a public dashboard hides tool data and results from anonymous viewers", async () => {
    const t = await build({ dashboardPublic: true });
    const { taskId } = await finishedTask(t);
    for (const url of ["/", `/tasks/${taskId}`, "/events", "/events/export"]) {
      const response = await get(t, url, HTML);
      expect(response.statusCode, url).toBe(200);
      for (const secret of secrets) expect(response.body, url).not.toContain(secret);
    }
    // A text search would match what is withheld, and so tell it: refused.
    const search = await get(t, "/events?q=vault-token", HTML);
    expect(search.statusCode).toBe(403);
    expect(search.body).not.toContain(SECRET_INPUT);
    expect((await get(t, `/tasks/${taskId}`, HTML)).body).toContain("shown to the operator only");
  });

  it("SWARM_DASHBOARD_PUBLIC_DETAILS lets anonymous viewers see them", async () => {
    const t = await build({ dashboardPublic: true, dashboardPublicDetails: true });
    const { taskId } = await finishedTask(t);
    expect((await get(t, `/tasks/${taskId}`, HTML)).body).toContain(SECRET_RESULT);
    expect((await get(t, "/events/export", HTML)).body).toContain(SECRET_INPUT);
  });
});

describe.each(ENGINES)("the stream on $name", ({ name: engine }) => {
  const build = (options: Options = {}) => buildTestApp<EngineName>({ ...options, engine });
  it("carries an agent its own bid but not another's while the auction is open, and both once it has closed", async () => {
    const t = await build();
    await t.app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = t.app.server.address() as AddressInfo;
    const honest = await t.agent("honest");
    const rival = await t.agent("rival");
    await t.agent("late");
    const messages: string[] = [];
    const socket = new WebSocket(`ws://127.0.0.1:${port}/api/stream?after_seq=0`, { headers: honest.auth });
    socket.on("message", (data: Buffer) => messages.push(data.toString()));
    await new Promise((resolve) => socket.once("open", resolve));
    const taskId = await t.task({ auction_ms: 10_000 });
    await t.bid(honest, taskId, 900);
    await t.bid(rival, taskId, RIVAL_BID);
    const marker = await t.eventLog.logEvent({ event_type: "test.marker", source: "test" });
    await eventually(
      () => messages.length,
      () => messages.some((m) => m.includes(marker.id)),
    );
    const bids = messages
      .map((m) => JSON.parse(m) as Json)
      .filter((m) => m.event?.event_type === "bid.submitted")
      .map((m) => m.event.agent_id as string);
    expect(bids).toEqual([honest.id]);
    expect(showsRivalBid(messages.join(""))).toBe(false);
    // A reconnect after the close replays the revealed bid, in seq order.
    t.clock.advance(10_000);
    await t.tick();
    socket.close();
    const replay = new WebSocket(`ws://127.0.0.1:${port}/api/stream?after_seq=0`, { headers: honest.auth });
    const replayed: Json[] = [];
    replay.on("message", (data: Buffer) => replayed.push(JSON.parse(data.toString()) as Json));
    await eventually(
      () => replayed.length,
      () => replayed.some((m) => m.event?.event_type === "task.assigned"),
    );
    replay.close();
    const revealed = replayed.filter((m) => m.event?.event_type === "bid.submitted").map((m) => m.event);
    expect(revealed.map((e: Json) => e.data.bid_sats)).toEqual([900, RIVAL_BID]);
    const seqs = replayed.map((m) => m.event.seq as number);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });
});
