import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decide, reliability } from "../../src/coordinator/decide.js";
import { CoordinatorState, dueAt, withTask } from "../../src/coordinator/state.js";
import { DEFAULT_RULES, type Command } from "../../src/coordinator/types.js";
import { eventOf, expectAccepted, scenario, START, types } from "./scenario.js";

describe("agents", () => {
  it("registers an idle agent with normalized capabilities and announces it", () => {
    const s = scenario();
    const decision = s.run({
      type: "RegisterAgent",
      name: " coder ",
      capabilities: ["Code", "code", "python"],
      max_concurrent: 2,
    });
    expect(types(decision)).toEqual(["agent.joined"]);
    const agent = expectAccepted(decision).subject.agent!;
    expect(agent).toMatchObject({
      name: "coder",
      capabilities: ["code", "python"],
      max_concurrent: 2,
      status: "idle",
    });
    expect(eventOf(decision, "agent.joined")).toMatchObject({ source: "coordinator", agent_id: agent.id });
  });

  it.each([
    [{ name: "" }, "name"],
    [{ name: "x".repeat(101) }, "name"],
    [{ name: "ok", max_concurrent: 0 }, "max_concurrent"],
    [{ name: "ok", max_concurrent: 1.5 }, "max_concurrent"],
    [{ name: "ok", capabilities: ["has space"] }, "capabilities[0]"],
    [{ name: "ok", capabilities: "code" }, "capabilities"],
  ])("refuses registration %j naming %s", (input, field) => {
    // Deliberately malformed input, as a JSON client could send it.
    const decision = scenario().when({ type: "RegisterAgent", ...input } as unknown as Command);
    expect(decision).toMatchObject({ ok: false, code: "INVALID_COMMAND", details: { field } });
  });

  it("takes a heartbeat silently, and announces a return from offline", () => {
    const s = scenario();
    const id = s.agent();
    s.advance(1000);
    const beat = expectAccepted(s.run({ type: "Heartbeat", agent_id: id }));
    expect(beat.events).toEqual([]);
    expect(beat.subject.agent?.last_seen).toBe(new Date(START + 1000).toISOString());
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs + 1);
    expect(types(s.run({ type: "Tick" }))).toEqual(["agent.status_changed"]);
    expect(s.state.getAgent(id)?.status).toBe("offline");
    const back = s.run({ type: "Heartbeat", agent_id: id });
    expect(eventOf(back, "agent.status_changed")?.data).toEqual({
      from: "offline",
      to: "idle",
      reason: "heartbeat",
    });
  });

  it("refuses heartbeats from unknown and departed agents", () => {
    const s = scenario();
    expect(s.when({ type: "Heartbeat", agent_id: "ghost" })).toMatchObject({ code: "AGENT_NOT_FOUND" });
    const id = s.agent();
    expect(types(s.run({ type: "DeregisterAgent", agent_id: id }))).toEqual([
      "agent.left",
      "agent.status_changed",
    ]);
    expect(s.when({ type: "Heartbeat", agent_id: id })).toMatchObject({ code: "AGENT_LEFT" });
    expect(s.when({ type: "DeregisterAgent", agent_id: id })).toMatchObject({ code: "AGENT_LEFT" });
  });
});

describe("posting tasks", () => {
  it("opens an auction for the task's window", () => {
    const s = scenario();
    const decision = s.run({
      type: "PostTask",
      description: "  write docs ",
      required_capabilities: ["writing"],
      auction_ms: 2000,
      max_bid_sats: 500,
    });
    expect(types(decision)).toEqual(["task.created", "task.bidding"]);
    expect(expectAccepted(decision).subject.task).toMatchObject({
      description: "write docs",
      status: "bidding",
      attempt: 1,
      required_capabilities: ["writing"],
      max_bid_sats: 500,
      auction_closes_at: new Date(START + 2000).toISOString(),
    });
  });

  it("uses the default window and refuses one out of bounds", () => {
    const s = scenario({ defaultAuctionMs: 750 });
    expect(s.state.getTask(s.task())?.auction_closes_at).toBe(new Date(START + 750).toISOString());
    expect(s.when({ type: "PostTask", description: "x", auction_ms: 50 })).toMatchObject({
      code: "INVALID_COMMAND",
      details: { field: "auction_ms" },
    });
    expect(
      s.when({ type: "PostTask", description: "x", max_bid_sats: DEFAULT_RULES.maxBidSats + 1 }),
    ).toMatchObject({
      details: { field: "max_bid_sats" },
    });
    expect(s.when({ type: "PostTask", description: "   " })).toMatchObject({
      details: { field: "description" },
    });
  });
});

describe("bidding", () => {
  it("records a bid, from the agent, with its amount", () => {
    const s = scenario();
    const a = s.agent("a");
    s.agent("b"); // a second eligible agent keeps the auction open
    const t = s.task();
    const decision = s.run({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 120 });
    expect(types(decision)).toEqual(["bid.submitted"]);
    expect(eventOf(decision, "bid.submitted")).toMatchObject({
      source: a,
      task_id: t,
      agent_id: a,
      data: { bid_sats: 120, attempt: 1, replaced_bid_sats: null },
    });
    expect(s.state.bidsFor(t)).toHaveLength(1);
  });

  it("keeps one live bid per agent: a new bid replaces the earlier one", () => {
    const s = scenario();
    const [a] = [s.agent("a"), s.agent("b")];
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 300 });
    const again = s.run({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 250 });
    expect(eventOf(again, "bid.submitted")?.data).toMatchObject({ bid_sats: 250, replaced_bid_sats: 300 });
    expect(s.state.bidsFor(t).map((bid) => bid.bid_sats)).toEqual([250]);
  });

  it("refuses bids with a reason for each rule", () => {
    const s = scenario();
    const coder = s.agent("coder", { capabilities: ["code"] });
    const writer = s.agent("writer", { capabilities: ["writing"] });
    const t = s.task({ required_capabilities: ["code"], max_bid_sats: 100 });
    const bid = (agent_id: string, bid_sats: number, task_id = t) =>
      s.when({ type: "SubmitBid", task_id, agent_id, bid_sats });
    expect(bid(coder, 10, "nope")).toMatchObject({ code: "TASK_NOT_FOUND" });
    expect(bid("ghost", 10)).toMatchObject({ code: "AGENT_NOT_FOUND" });
    expect(bid(writer, 10)).toMatchObject({
      code: "AGENT_NOT_ELIGIBLE",
      details: { missing_capabilities: ["code"] },
    });
    expect(bid(coder, 0)).toMatchObject({ code: "BID_OUT_OF_RANGE" });
    expect(bid(coder, 101)).toMatchObject({ code: "BID_OUT_OF_RANGE", details: { max_bid_sats: 100 } });
    expect(bid(coder, 2.5)).toMatchObject({ code: "INVALID_COMMAND", details: { field: "bid_sats" } });
    const open = s.task();
    expect(
      s.when({ type: "SubmitBid", task_id: open, agent_id: coder, bid_sats: DEFAULT_RULES.maxBidSats + 1 }),
    ).toMatchObject({
      code: "BID_OUT_OF_RANGE",
    });
    s.advance(DEFAULT_RULES.defaultAuctionMs);
    expect(bid(coder, 10)).toMatchObject({ code: "AUCTION_CLOSED" });
  });

  it("refuses bids from offline agents, agents at capacity, and on tasks no longer bidding", () => {
    const s = scenario();
    const busy = s.agent("busy");
    const first = s.task();
    s.given({ type: "SubmitBid", task_id: first, agent_id: busy, bid_sats: 5 }); // sole agent: closes at once
    expect(s.state.getTask(first)?.status).toBe("assigned");
    const second = s.task();
    expect(s.when({ type: "SubmitBid", task_id: second, agent_id: busy, bid_sats: 5 })).toMatchObject({
      code: "AGENT_AT_CAPACITY",
    });
    const other = s.agent("other");
    expect(s.when({ type: "SubmitBid", task_id: first, agent_id: other, bid_sats: 5 })).toMatchObject({
      code: "TASK_NOT_BIDDING",
    });
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs + 1);
    s.given({ type: "Tick" });
    const third = s.task();
    expect(s.when({ type: "SubmitBid", task_id: third, agent_id: other, bid_sats: 5 })).toMatchObject({
      code: "AGENT_OFFLINE",
    });
  });
});

describe("closing auctions", () => {
  function threeBidders(rules = {}) {
    const s = scenario({ closeWhenAllBid: false, ...rules });
    const agents = [s.agent("a"), s.agent("b"), s.agent("c")] as [string, string, string];
    const t = s.task();
    return { s, agents, t };
  }

  it("assigns the task to the lowest bid at the deadline", () => {
    const {
      s,
      agents: [a, b, c],
      t,
    } = threeBidders();
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 300 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: b, bid_sats: 120 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: c, bid_sats: 200 });
    s.advance(DEFAULT_RULES.defaultAuctionMs - 1);
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    s.advance(1);
    const closed = s.run({ type: "Tick" });
    expect(types(closed)).toEqual(["auction.closed", "task.assigned", "agent.status_changed"]);
    expect(eventOf(closed, "auction.closed")?.data).toEqual({
      attempt: 1,
      reason: "deadline",
      bids: 3,
      winner: b,
      winning_bid_sats: 120,
      award: "lowest",
    });
    expect(eventOf(closed, "task.assigned")).toMatchObject({ agent_id: b, data: { bid_sats: 120 } });
    expect(s.state.getTask(t)).toMatchObject({
      status: "assigned",
      assigned_agent: b,
      winning_bid_sats: 120,
    });
    expect(s.state.getAgent(b)?.status).toBe("busy");
    expect(expectAccepted(closed).changes.bids.map((bid) => [bid.agent_id, bid.outcome])).toEqual([
      [a, "lost"],
      [b, "won"],
      [c, "lost"],
    ]);
  });

  it("breaks a tie in favour of the bid placed first, counting a replacement as placed anew", () => {
    const {
      s,
      agents: [a, b],
      t,
    } = threeBidders();
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 100 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: b, bid_sats: 100 });
    expect(eventOf(s.when({ type: "CloseAuction", task_id: t }), "task.assigned")?.agent_id).toBe(a);
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 101 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 100 }); // back to 100, but after b now
    expect(eventOf(s.when({ type: "CloseAuction", task_id: t }), "task.assigned")?.agent_id).toBe(b);
  });

  it("takes the same amount again as a retry: nothing written, the bid keeps its place", () => {
    const {
      s,
      agents: [a, b],
      t,
    } = threeBidders();
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 100 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: b, bid_sats: 100 });
    const retry = s.run({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 100 });
    expect(expectAccepted(retry).events).toEqual([]);
    expect(expectAccepted(retry).subject.bid).toMatchObject({ agent_id: a, bid_sats: 100, bid_order: 1 });
    expect(eventOf(s.when({ type: "CloseAuction", task_id: t }), "task.assigned")?.agent_id).toBe(a);
  });

  it("fails the task with 'no bids' when nobody bid", () => {
    const { s, t } = threeBidders();
    s.advance(DEFAULT_RULES.defaultAuctionMs);
    const closed = s.run({ type: "Tick" });
    expect(types(closed)).toEqual(["auction.closed", "task.failed"]);
    expect(eventOf(closed, "task.failed")?.data).toEqual({ reason: "no bids", attempt: 1 });
    const task = expectAccepted(closed).changes.tasks[0];
    expect(task).toMatchObject({
      status: "failed",
      error: "no bids",
      completed_at: new Date(s.now).toISOString(),
    });
    expect(s.state.getTask(t)).toBeUndefined(); // final tasks leave the working set
  });

  it("passes over a winner that filled up since it bid, to the next lowest", () => {
    const {
      s,
      agents: [a, b],
      t,
    } = threeBidders();
    const other = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 10 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: b, bid_sats: 20 });
    s.given({ type: "SubmitBid", task_id: other, agent_id: a, bid_sats: 10 });
    s.given({ type: "CloseAuction", task_id: other }); // a now holds its one slot
    const closed = s.run({ type: "CloseAuction", task_id: t });
    expect(eventOf(closed, "task.assigned")?.agent_id).toBe(b);
  });

  it("closes early once every eligible online agent has bid, and only then", () => {
    const s = scenario();
    const a = s.agent("a");
    const b = s.agent("b");
    s.agent("c", { capabilities: ["other"] }); // eligible too: no capabilities are required
    const offline = s.agent("d");
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs + 1);
    for (const id of [a, b]) s.given({ type: "Heartbeat", agent_id: id });
    s.given({ type: "Tick" }); // c and d go offline
    expect(s.state.getAgent(offline)?.status).toBe("offline");
    const t = s.task();
    expect(types(s.run({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 50 }))).toEqual([
      "bid.submitted",
    ]);
    const last = s.run({ type: "SubmitBid", task_id: t, agent_id: b, bid_sats: 40 });
    expect(types(last)).toEqual(["bid.submitted", "auction.closed", "task.assigned", "agent.status_changed"]);
    expect(eventOf(last, "auction.closed")?.data).toMatchObject({ reason: "all bids in", winner: b });
  });

  it("waits for the deadline when early close is turned off", () => {
    const s = scenario({ closeWhenAllBid: false });
    const a = s.agent();
    const t = s.task();
    expect(types(s.run({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 50 }))).toEqual([
      "bid.submitted",
    ]);
  });

  it("refuses to close an auction that is not open", () => {
    const { s, t } = threeBidders();
    s.given({ type: "CancelTask", task_id: t });
    expect(s.when({ type: "CloseAuction", task_id: t })).toMatchObject({ code: "TASK_NOT_FOUND" });
    expect(s.when({ type: "CloseAuction", task_id: "missing" })).toMatchObject({ code: "TASK_NOT_FOUND" });
  });
});

describe("auctions by deadline", () => {
  /** A task whose 100 ms auction is due now, with a bid from a; b has not bid, so it stays open. */
  function dueAuction() {
    const s = scenario();
    const a = s.agent("a");
    s.agent("b");
    const t = s.task({ auction_ms: 100 });
    s.given({ type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 5 });
    s.advance(100);
    return { s, a, t };
  }

  it("closes on each Tick exactly the auctions that are due, earliest deadline first", () => {
    const s = scenario();
    const a = s.agent("a");
    s.agent("b"); // never bids, so no auction closes early for want of bidders
    const late = s.task({ description: "late", auction_ms: 300 });
    const early = s.task({ description: "early", auction_ms: 100 });
    const middle = s.task({ description: "middle", auction_ms: 200 });
    for (const task of [late, early, middle])
      s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 5 });
    s.advance(99);
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    s.advance(151); // 250 ms: early and middle are due, late is not
    const closed = expectAccepted(s.run({ type: "Tick" }));
    expect(closed.events.filter((e) => e.event_type === "auction.closed").map((e) => e.task_id)).toEqual([
      early,
      middle,
    ]);
    expect(s.state.getTask(late)?.status).toBe("bidding");
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    s.advance(50);
    expect(eventOf(s.run({ type: "Tick" }), "auction.closed")?.task_id).toBe(late);
  });

  it("a scoped Tick (one replica's claimed work) closes and expires only what it names", () => {
    const s = scenario();
    const a = s.agent("a");
    const silent = s.agent("silent");
    const other = s.agent("other-silent");
    s.agent("b"); // never bids, so no auction closes early for want of bidders
    const mine = s.task({ description: "claimed here", auction_ms: 100 });
    const theirs = s.task({ description: "claimed elsewhere", auction_ms: 100 });
    for (const task of [mine, theirs])
      s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 5 });
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs + 1);
    s.given({ type: "Heartbeat", agent_id: a });
    const scoped = expectAccepted(s.run({ type: "Tick", scope: { agent_ids: [silent], task_ids: [mine] } }));
    expect(scoped.events.filter((e) => e.event_type === "auction.closed").map((e) => e.task_id)).toEqual([
      mine,
    ]);
    expect(s.state.getAgent(silent)?.status).toBe("offline");
    expect(s.state.getAgent(other)?.status).toBe("idle");
    expect(s.state.getTask(theirs)?.status).toBe("bidding");
    // The unscoped Tick still does all that is due.
    const rest = expectAccepted(s.run({ type: "Tick" }));
    expect(eventOf(rest, "auction.closed")?.task_id).toBe(theirs);
    expect(s.state.getAgent(other)?.status).toBe("offline");
  });

  it("finds a due auction again when the Tick that closed it was never applied (a failed write)", () => {
    const { s, t } = dueAuction();
    expect(eventOf(s.when({ type: "Tick" }), "auction.closed")?.task_id).toBe(t);
    expect(eventOf(s.when({ type: "Tick" }), "auction.closed")?.task_id).toBe(t);
    s.run({ type: "Tick" });
    expect(s.state.getTask(t)?.status).toBe("assigned");
    expect(s.state.dueTasks(s.now)).toEqual([]);
  });

  it("judges a re-auctioned task by its new round's deadline, not the old one", () => {
    const { s, a, t } = dueAuction();
    s.given({ type: "Tick" });
    s.advance(10);
    // Handed back: a new round opens with a deadline of its own.
    s.given({ type: "ReleaseTask", task_id: t, agent_id: a, reason: "stopping" });
    const reopened = s.state.getTask(t)!;
    expect(reopened).toMatchObject({ status: "bidding", attempt: 2 });
    expect(s.state.dueTasks(s.now)).toEqual([]);
    s.advance(Date.parse(reopened.auction_closes_at!) - s.now - 1);
    expect(s.state.dueTasks(s.now)).toEqual([]);
    s.advance(1);
    expect(s.state.dueTasks(s.now).map((task) => task.id)).toEqual([t]);
  });
});

describe("the task lifecycle", () => {
  function assigned() {
    const s = scenario();
    const agent = s.agent("winner");
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: agent, bid_sats: 42 });
    return { s, agent, t };
  }

  it("runs assigned → running → completed, freeing the agent", () => {
    const { s, agent, t } = assigned();
    expect(types(s.run({ type: "StartTask", task_id: t, agent_id: agent }))).toEqual(["task.started"]);
    s.advance(1500);
    const done = s.run({ type: "CompleteTask", task_id: t, agent_id: agent, result: "all good" });
    expect(types(done)).toEqual(["task.completed", "agent.status_changed"]);
    expect(eventOf(done, "task.completed")).toMatchObject({
      source: agent,
      data: { result: "all good", bid_sats: 42, duration_ms: 1500 },
    });
    expect(expectAccepted(done).subject.task).toMatchObject({ status: "completed", result: "all good" });
    expect(s.state.getAgent(agent)?.status).toBe("idle");
  });

  it("completes or fails straight from assigned", () => {
    const { s, agent, t } = assigned();
    expect(types(s.run({ type: "FailTask", task_id: t, agent_id: agent, reason: "tool crashed" }))).toEqual([
      "task.failed",
      "agent.status_changed",
    ]);
    const next = assigned();
    expect(next.s.run({ type: "CompleteTask", task_id: next.t, agent_id: next.agent }).ok).toBe(true);
  });

  it("refuses every move the lifecycle does not allow", () => {
    const { s, agent, t } = assigned();
    const stranger = s.agent("stranger");
    expect(s.when({ type: "StartTask", task_id: t, agent_id: stranger })).toMatchObject({
      code: "NOT_ASSIGNED_AGENT",
    });
    expect(s.when({ type: "CompleteTask", task_id: t, agent_id: stranger })).toMatchObject({
      code: "NOT_ASSIGNED_AGENT",
    });
    expect(
      s.when({ type: "RecordToolCall", task_id: t, agent_id: agent, tool: "search", phase: "called" }),
    ).toMatchObject({
      code: "TASK_NOT_RUNNING",
    });
    s.given({ type: "StartTask", task_id: t, agent_id: agent });
    expect(s.when({ type: "StartTask", task_id: t, agent_id: agent })).toMatchObject({
      code: "TASK_NOT_ASSIGNED",
    });
    const finished = s.given({ type: "CompleteTask", task_id: t, agent_id: agent }).subject.task!;
    expect(s.state.getTask(t)).toBeUndefined();
    // The shell loads a final task from its table for commands that name it.
    const final = (command: Command) => decide(withTask(s.state, finished), command, s.ctx());
    for (const command of [
      { type: "CompleteTask", task_id: t, agent_id: agent },
      { type: "FailTask", task_id: t },
      { type: "CancelTask", task_id: t },
      { type: "StartTask", task_id: t, agent_id: agent },
    ] as const) {
      expect(final(command)).toMatchObject({ code: "TASK_FINAL" });
    }
  });

  it("refuses to complete or fail a task whose auction is still open (the Python-era race)", () => {
    const s = scenario({ closeWhenAllBid: false });
    const agent = s.agent();
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: agent, bid_sats: 10 });
    expect(s.when({ type: "CompleteTask", task_id: t, agent_id: agent, result: "too early" })).toMatchObject({
      code: "TASK_NOT_ACTIVE",
    });
    expect(s.when({ type: "FailTask", task_id: t })).toMatchObject({ code: "TASK_NOT_ACTIVE" });
    s.advance(DEFAULT_RULES.defaultAuctionMs);
    s.given({ type: "Tick" });
    expect(s.state.getTask(t)).toMatchObject({ status: "assigned", result: null });
  });

  it("lets the operator fail a task and cancel one at any live stage", () => {
    const { s, agent, t } = assigned();
    const failed = s.run({ type: "FailTask", task_id: t, reason: "wrong task" });
    expect(eventOf(failed, "task.failed")).toMatchObject({
      source: "coordinator",
      agent_id: agent,
      data: { by: "operator", reason: "wrong task" },
    });
    const bidding = s.task();
    expect(eventOf(s.run({ type: "CancelTask", task_id: bidding }), "task.cancelled")?.data).toEqual({
      reason: "cancelled by the operator",
      previous_status: "bidding",
    });
    const other = assigned();
    other.s.given({ type: "StartTask", task_id: other.t, agent_id: other.agent });
    const cancelled = other.s.run({ type: "CancelTask", task_id: other.t, reason: "no longer needed" });
    expect(types(cancelled)).toEqual(["task.cancelled", "agent.status_changed"]);
    expect(other.s.state.getAgent(other.agent)?.status).toBe("idle");
  });

  it("records tool calls of a running task", () => {
    const { s, agent, t } = assigned();
    s.given({ type: "StartTask", task_id: t, agent_id: agent });
    const called = s.run({
      type: "RecordToolCall",
      task_id: t,
      agent_id: agent,
      tool: "web_search",
      phase: "called",
      input: { q: "sats" },
    });
    const call = eventOf(called, "tool.called");
    expect(call).toMatchObject({
      source: agent,
      data: { tool: "web_search", input: '{"q":"sats"}', output: null, error: null },
    });
    const callId = (call?.data as { call_id: string }).call_id;
    expect(callId).toMatch(/^[0-9a-f-]{36}$/);
    const finished = s.run({
      type: "RecordToolCall",
      task_id: t,
      agent_id: agent,
      tool: "web_search",
      phase: "completed",
      call_id: callId,
      output: "x".repeat(500),
    });
    expect(eventOf(finished, "tool.completed")?.data).toMatchObject({
      call_id: callId,
      output: expect.stringMatching(/^x{199}…$/) as string,
    });
    expect(
      types(
        s.run({
          type: "RecordToolCall",
          task_id: t,
          agent_id: agent,
          tool: "shell",
          phase: "failed",
          error: "exit 1",
        }),
      ),
    ).toEqual(["tool.failed"]);
    const badPhase = { type: "RecordToolCall", task_id: t, agent_id: agent, tool: "shell", phase: "halfway" };
    expect(s.when(badPhase as unknown as Command)).toMatchObject({
      code: "INVALID_COMMAND",
      details: { field: "phase" },
    });
  });
});

describe("losing agents", () => {
  it("re-auctions a silent agent's task, then fails it after the last attempt", () => {
    const s = scenario({ maxAuctionAttempts: 2 });
    const first = s.agent("first");
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: first, bid_sats: 10 });
    s.given({ type: "StartTask", task_id: t, agent_id: first });
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    const lost = s.run({ type: "Tick" });
    expect(types(lost)).toEqual(["task.bidding", "agent.status_changed"]);
    expect(eventOf(lost, "task.bidding")?.data).toMatchObject({
      attempt: 2,
      reason: "agent went silent",
      previous_agent: first,
    });
    expect(eventOf(lost, "agent.status_changed")?.data).toEqual({
      from: "busy",
      to: "offline",
      reason: "heartbeat timeout",
    });
    expect(s.state.getTask(t)).toMatchObject({
      status: "bidding",
      attempt: 2,
      assigned_agent: null,
      started_at: null,
    });
    const second = s.agent("second");
    s.given({ type: "SubmitBid", task_id: t, agent_id: second, bid_sats: 20 });
    expect(s.state.getTask(t)?.assigned_agent).toBe(second);
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    const failed = s.run({ type: "Tick" });
    expect(eventOf(failed, "task.failed")?.data).toEqual({
      reason: "agent went silent; no auction attempts left",
      attempt: 2,
    });
  });

  it("re-auctions the open tasks of an agent that deregisters", () => {
    const s = scenario();
    const agent = s.agent();
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: agent, bid_sats: 10 });
    const left = s.run({ type: "DeregisterAgent", agent_id: agent });
    expect(types(left)).toEqual(["agent.left", "task.bidding", "agent.status_changed"]);
    expect(s.state.getTask(t)?.status).toBe("bidding");
  });

  it("does not let a silent agent win the auction closing in the same tick", () => {
    const s = scenario({ closeWhenAllBid: false, defaultAuctionMs: DEFAULT_RULES.heartbeatTimeoutMs });
    const silent = s.agent("silent");
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: silent, bid_sats: 1 });
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    const tick = s.run({ type: "Tick" });
    expect(eventOf(tick, "task.failed")?.data).toMatchObject({ reason: "no eligible bids" });
  });
});

describe("handing a task back", () => {
  /** An agent holding a task it won, and a second agent that could take it. */
  function held(rules: Parameters<typeof scenario>[0] = {}) {
    const s = scenario({ closeWhenAllBid: false, ...rules });
    const holder = s.agent("holder");
    const other = s.agent("other");
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: holder, bid_sats: 10 });
    s.advance(DEFAULT_RULES.defaultAuctionMs);
    s.given({ type: "Tick" });
    return { s, holder, other, t };
  }

  /** The agent wins the task's open round as the only bidder, at the deadline. */
  function win(s: ReturnType<typeof scenario>, t: string, agent: string) {
    s.given({ type: "SubmitBid", task_id: t, agent_id: agent, bid_sats: 20 });
    s.advance(DEFAULT_RULES.defaultAuctionMs);
    s.given({ type: "Tick" });
    expect(s.state.getTask(t)?.assigned_agent).toBe(agent);
  }

  it("puts a running task up again, says so by its agent, and frees the agent", () => {
    const { s, holder, t } = held();
    s.given({ type: "StartTask", task_id: t, agent_id: holder });
    const released = s.run({
      type: "ReleaseTask",
      task_id: t,
      agent_id: holder,
      reason: "stopping: not finished within the 10000 ms grace",
    });
    expect(types(released)).toEqual(["task.released", "task.bidding", "agent.status_changed"]);
    expect(eventOf(released, "task.released")).toMatchObject({
      source: holder,
      task_id: t,
      agent_id: holder,
      data: {
        reason: "stopping: not finished within the 10000 ms grace",
        attempt: 1,
        previous_status: "running",
      },
    });
    expect(eventOf(released, "task.bidding")?.data).toEqual({
      attempt: 2,
      closes_at: new Date(s.now + DEFAULT_RULES.defaultAuctionMs).toISOString(),
      reason: "handed back by its agent",
      previous_agent: holder,
    });
    expect(s.state.getTask(t)).toMatchObject({
      status: "bidding",
      attempt: 2,
      releases: 1,
      assigned_agent: null,
      winning_bid_sats: null,
      started_at: null,
      error: null,
    });
    expect(s.state.getAgent(holder)?.status).toBe("idle");
  });

  it("hands back a task not yet started, with a default reason; the new round is a fresh auction another agent wins", () => {
    const { s, holder, other, t } = held();
    const released = s.run({ type: "ReleaseTask", task_id: t, agent_id: holder });
    expect(eventOf(released, "task.released")?.data).toEqual({
      reason: "handed back by its agent",
      attempt: 1,
      previous_status: "assigned",
    });
    // The holder's round-1 bid does not carry over: only the new round's bids count.
    expect(s.state.bidsFor(t)).toEqual([]);
    s.given({ type: "SubmitBid", task_id: t, agent_id: other, bid_sats: 30 });
    s.advance(DEFAULT_RULES.defaultAuctionMs);
    const closed = s.run({ type: "Tick" });
    expect(eventOf(closed, "auction.closed")?.data).toMatchObject({ attempt: 2, bids: 1, winner: other });
    expect(s.state.getTask(t)).toMatchObject({ status: "assigned", assigned_agent: other, attempt: 2 });
  });

  it("does not count a hand-back among the task's rounds: at the last round it goes up again, and silence is still limited", () => {
    const { s, holder, other, t } = held({ maxAuctionAttempts: 2 });
    s.given({ type: "ReleaseTask", task_id: t, agent_id: holder });
    // Round 2 of 2; a counted round would leave no attempt for losing this agent.
    win(s, t, other);
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    const silent = s.run({ type: "Heartbeat", agent_id: holder }); // holder stays online
    expect(silent.ok).toBe(true);
    const lost = s.run({ type: "Tick" });
    expect(eventOf(lost, "task.bidding")?.data).toMatchObject({ attempt: 3, reason: "agent went silent" });
    expect(s.state.getTask(t)).toMatchObject({ attempt: 3, releases: 1 });
    // Rounds 1 (handed back) and 2 (lost) behind it: losing a second agent uses the last one up.
    win(s, t, holder);
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    const failed = s.run({ type: "Tick" });
    expect(eventOf(failed, "task.failed")?.data).toEqual({
      reason: "agent went silent; no auction attempts left",
      attempt: 3,
    });
  });

  it("never fails the task, even handed back at what would be its last round", () => {
    const { s, holder, t } = held({ maxAuctionAttempts: 1 });
    const released = s.run({ type: "ReleaseTask", task_id: t, agent_id: holder });
    expect(types(released)).toEqual(["task.released", "task.bidding", "agent.status_changed"]);
    expect(s.state.getTask(t)).toMatchObject({ status: "bidding", attempt: 2, releases: 1 });
  });

  it("refuses a hand-back by anyone but the holder, of a task in its auction or finished, and a bad reason", () => {
    const { s, holder, other, t } = held();
    expect(s.when({ type: "ReleaseTask", task_id: t, agent_id: other })).toMatchObject({
      code: "NOT_ASSIGNED_AGENT",
    });
    expect(s.when({ type: "ReleaseTask", task_id: "nope", agent_id: holder })).toMatchObject({
      code: "TASK_NOT_FOUND",
    });
    expect(s.when({ type: "ReleaseTask", task_id: t, agent_id: holder, reason: "  " })).toMatchObject({
      code: "INVALID_COMMAND",
      details: { field: "reason" },
    });
    expect(
      s.when({ type: "ReleaseTask", task_id: t, agent_id: holder, reason: "x".repeat(1001) }),
    ).toMatchObject({ code: "INVALID_COMMAND", details: { field: "reason" } });
    const open = s.task();
    expect(s.when({ type: "ReleaseTask", task_id: open, agent_id: holder })).toMatchObject({
      code: "TASK_NOT_ACTIVE",
      details: { status: "bidding" },
    });
    const finished = s.given({ type: "CompleteTask", task_id: t, agent_id: holder }).subject.task!;
    const final = decide(
      withTask(s.state, finished),
      { type: "ReleaseTask", task_id: t, agent_id: holder },
      s.ctx(),
    );
    expect(final).toMatchObject({ code: "TASK_FINAL" });
    const again = held();
    again.s.given({ type: "ReleaseTask", task_id: again.t, agent_id: again.holder });
    // Released once: a retry finds the task back in its auction, and nothing more is written.
    expect(again.s.when({ type: "ReleaseTask", task_id: again.t, agent_id: again.holder })).toMatchObject({
      code: "TASK_NOT_ACTIVE",
    });
  });
});

describe("the server's own stalls", () => {
  const timeout = DEFAULT_RULES.heartbeatTimeoutMs;
  const at = (ms: number) => new Date(START + ms).toISOString();
  /** An agent last heard at START, running a task. */
  const running = () => {
    const s = scenario();
    const agent = s.agent();
    const t = s.task();
    s.given({ type: "SubmitBid", task_id: t, agent_id: agent, bid_sats: 10 });
    s.given({ type: "StartTask", task_id: t, agent_id: agent });
    return { s, agent, t };
  };

  it("does not count silence that overlaps a stall of the server as the agent's", () => {
    const { s, agent, t } = running();
    // Heard at 0, then the server stalled for 40 s of the 50 s since: 10 s of silence are the agent's.
    s.advance(50_000);
    const tick = s.run({ type: "Tick", stalls: [{ from: at(5_000), until: at(45_000) }] });
    expect(types(tick)).toEqual([]);
    expect(s.state.getAgent(agent)?.status).toBe("busy");
    expect(s.state.getTask(t)).toMatchObject({ status: "running", assigned_agent: agent, attempt: 1 });
  });

  it("still expires an agent silent for the timeout outside the stalls", () => {
    const { s, agent, t } = running();
    const stalls = [
      { from: at(-20_000), until: at(-10_000) }, // before the agent was last heard: no excuse
      { from: at(5_000), until: at(15_000) },
    ];
    s.advance(timeout + 10_000 - 1);
    expect(types(s.run({ type: "Tick", stalls }))).toEqual([]);
    s.advance(1);
    expect(types(s.run({ type: "Tick", stalls }))).toEqual(["task.bidding", "agent.status_changed"]);
    expect(s.state.getAgent(agent)?.status).toBe("offline");
    expect(s.state.getTask(t)).toMatchObject({ status: "bidding", attempt: 2 });
  });

  it("counts only the part of a stall that falls inside the agent's silence", () => {
    const { s, agent } = running();
    s.advance(10_000);
    s.given({ type: "Heartbeat", agent_id: agent }); // heard at 10 s, in the middle of a stall
    s.advance(timeout + 5_000);
    const stalls = [{ from: at(0), until: at(15_000) }];
    expect(types(s.run({ type: "Tick", stalls }))).toEqual(["task.bidding", "agent.status_changed"]);
  });
});

describe("recovery after a restart", () => {
  it("puts online agents offline with a grace period in which their bids and tasks stand", () => {
    const s = scenario({ closeWhenAllBid: false });
    const a = s.agent("a");
    const b = s.agent("b");
    const running = s.task();
    s.given({ type: "SubmitBid", task_id: running, agent_id: a, bid_sats: 5 });
    s.given({ type: "CloseAuction", task_id: running });
    s.given({ type: "StartTask", task_id: running, agent_id: a });
    const open = s.task();
    s.given({ type: "SubmitBid", task_id: open, agent_id: b, bid_sats: 7 });
    s.advance(DEFAULT_RULES.defaultAuctionMs + 60_000); // the process was down past the deadline
    const recovered = s.run({ type: "Recover" });
    expect(types(recovered)).toEqual(["agent.status_changed", "agent.status_changed"]);
    expect(eventOf(recovered, "agent.status_changed")?.data).toMatchObject({
      to: "offline",
      reason: "coordinator restarted",
    });
    const tick = s.run({ type: "Tick" });
    expect(eventOf(tick, "task.assigned")).toMatchObject({
      task_id: open,
      agent_id: b,
      data: { bid_sats: 7 },
    });
    expect(s.state.getTask(running)?.status).toBe("running");
    // a reports its result within the grace period and is back online.
    const done = s.run({ type: "CompleteTask", task_id: running, agent_id: a, result: "ok" });
    expect(types(done)).toEqual(["task.completed", "agent.status_changed"]);
    expect(s.state.getAgent(a)?.status).toBe("idle");
    // b never comes back: after the grace period its task is put up again.
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    const lost = s.run({ type: "Tick" });
    expect(eventOf(lost, "task.bidding")?.data).toMatchObject({
      reason: "agent did not come back after a restart",
      attempt: 2,
    });
  });
});

describe("purity", () => {
  it("leaves the state untouched and decides the same way twice", () => {
    const s = scenario();
    const a = s.agent();
    const t = s.task();
    const before = JSON.stringify([[...s.state.agents()], s.state.getTask(t), s.state.bidsFor(t)]);
    const ctx = () => ({
      now: new Date(START + 10),
      newId: () => "00000000-0000-4000-8000-0000000000ff",
      rules: DEFAULT_RULES,
    });
    const first = decide(s.state, { type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 9 }, ctx());
    const second = decide(s.state, { type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 9 }, ctx());
    expect(second).toEqual(first);
    expect(JSON.stringify([[...s.state.agents()], s.state.getTask(t), s.state.bidsFor(t)])).toBe(before);
  });

  it("works from a state rebuilt out of records, as the shell loads it", () => {
    const s = scenario();
    const a = s.agent();
    const t = s.task();
    const rebuilt = CoordinatorState.from({
      agents: [...s.state.agents()],
      tasks: [s.state.getTask(t)!],
      bids: [],
    });
    const decision = decide(
      rebuilt,
      { type: "SubmitBid", task_id: t, agent_id: a, bid_sats: 3 },
      {
        now: new Date(START),
        newId: () => "00000000-0000-4000-8000-0000000000aa",
        rules: DEFAULT_RULES,
      },
    );
    expect(types(decision)).toEqual([
      "bid.submitted",
      "auction.closed",
      "task.assigned",
      "agent.status_changed",
    ]);
  });
});

// ------------------------------------------------------------------ the task lifecycle

/** Two agents bid on a task (a lower, b higher) and the auction closes to a. */
function awarded(extra: Partial<Extract<Command, { type: "PostTask" }>> = {}, rules = {}) {
  const s = scenario(rules);
  const a = s.agent("a");
  const b = s.agent("b");
  const task = s.task(extra);
  s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 20 });
  s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 10 });
  expect(s.state.getTask(task)).toMatchObject({ status: "assigned", assigned_agent: a });
  return { s, a, b, task };
}

describe("award acknowledgement", () => {
  it("passes an award the winner does not start within ack_ms to the next-best bid, naming both agents", () => {
    const { s, a, b, task } = awarded({ ack_ms: 2000 });
    expect(s.state.getTask(task)?.due_at).toBe(new Date(s.now + 2000).toISOString());
    s.advance(1999);
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    s.advance(1);
    const lapse = s.run({ type: "Tick" });
    expect(types(lapse)).toEqual([
      "task.award_expired",
      "task.assigned",
      "agent.status_changed",
      "agent.status_changed",
    ]);
    expect(eventOf(lapse, "task.award_expired")).toMatchObject({
      agent_id: a,
      data: { attempt: 1, ack_ms: 2000, expired_agent: a, next_agent: b, next_bid_sats: 20 },
    });
    expect(eventOf(lapse, "task.assigned")).toMatchObject({
      agent_id: b,
      data: { bid_sats: 20, passed_from: a },
    });
    expect(s.state.getTask(task)).toMatchObject({
      assigned_agent: b,
      winning_bid_sats: 20,
      attempt: 1,
      declined_agents: [a],
      due_at: new Date(s.now + 2000).toISOString(),
    });
    // The first winner can no longer start it; the new one can.
    expect(s.when({ type: "StartTask", task_id: task, agent_id: a })).toMatchObject({
      code: "NOT_ASSIGNED_AGENT",
    });
    expect(types(s.run({ type: "StartTask", task_id: task, agent_id: b }))).toEqual(["task.started"]);
    expect(s.state.getTask(task)?.due_at).toBeNull();
  });

  it("opens the next round when no bid of the round is left, charged as an agent lost", () => {
    const { s, task } = awarded({ ack_ms: 1000 });
    s.advance(1000);
    s.run({ type: "Tick" });
    s.advance(1000);
    const second = s.run({ type: "Tick" });
    expect(types(second)).toContain("task.bidding");
    expect(eventOf(second, "task.award_expired")?.data).toMatchObject({ next_agent: null });
    expect(eventOf(second, "task.bidding")?.data).toMatchObject({
      attempt: 2,
      reason: "award not acknowledged within 1000 ms",
    });
    expect(s.state.getTask(task)).toMatchObject({
      status: "bidding",
      attempt: 2,
      failures: 1,
      declined_agents: [],
    });
  });

  it("passes over a bidder that cannot take the task any more", () => {
    const s = scenario();
    const a = s.agent("a");
    const b = s.agent("b");
    const c = s.agent("c");
    const task = s.task({ ack_ms: 1000 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 1 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 2 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: c, bid_sats: 3 });
    s.given({ type: "DeregisterAgent", agent_id: b });
    s.advance(1000);
    expect(eventOf(s.run({ type: "Tick" }), "task.award_expired")?.data).toMatchObject({ next_agent: c });
  });

  it("takes a start before the Tick has passed the award on, and never lapses a run", () => {
    const { s, a, task } = awarded({ ack_ms: 1000 });
    s.advance(5000);
    expect(types(s.run({ type: "StartTask", task_id: task, agent_id: a }))).toEqual(["task.started"]);
    s.advance(60_000);
    expect(types(s.run({ type: "Heartbeat", agent_id: a }))).toEqual([]);
    expect(types(s.run({ type: "Tick" }))).not.toContain("task.award_expired");
  });

  it("defaults ack_ms from the rules, and never lapses with none", () => {
    expect(awarded().s.state.getTask(awarded().task)?.ack_ms).toBe(DEFAULT_RULES.defaultAckMs);
    const { s, task } = awarded({}, { defaultAckMs: null });
    expect(s.state.getTask(task)).toMatchObject({ ack_ms: null, due_at: null });
  });

  it("gives an agent offline since a restart its grace before its award lapses", () => {
    const { s, a, b, task } = awarded({ ack_ms: 1000 });
    s.given({ type: "Recover" });
    s.advance(1000);
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    // Back, and still not starting: now it lapses.
    s.given({ type: "Heartbeat", agent_id: a });
    s.given({ type: "Heartbeat", agent_id: b });
    expect(eventOf(s.run({ type: "Tick" }), "task.award_expired")?.data).toMatchObject({ expired_agent: a });
    expect(s.state.getTask(task)?.assigned_agent).toBe(b);
  });
});

describe("execution deadline", () => {
  it("times out a run past timeout_ms, frees the agent's slot and fails the task with a reason", () => {
    const { s, a, task } = awarded({ timeout_ms: 5000 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    s.advance(4999);
    s.given({ type: "Heartbeat", agent_id: a });
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    s.advance(1);
    const late = s.run({ type: "Tick" });
    expect(types(late)).toEqual(["task.timed_out", "task.failed", "agent.status_changed"]);
    expect(eventOf(late, "task.timed_out")).toMatchObject({
      agent_id: a,
      data: { attempt: 1, timeout_ms: 5000 },
    });
    expect(eventOf(late, "task.failed")?.data).toMatchObject({ reason: "timed out after 5000 ms" });
    expect(s.state.getAgent(a)?.status).toBe("idle");
    expect(expectAccepted(late).changes.tasks[0]).toMatchObject({
      status: "failed",
      error: "timed out after 5000 ms",
      failures: 1,
    });
  });

  it.each([
    [{ timeout_ms: 0 }, "timeout_ms"],
    [{ ack_ms: 50 }, "ack_ms"],
    [{ max_attempts: 0 }, "max_attempts"],
    [{ max_attempts: 1.5 }, "max_attempts"],
    [{ retry_backoff_ms: -1 }, "retry_backoff_ms"],
    [{ retry_backoff_ms: DEFAULT_RULES.maxRetryBackoffMs + 1 }, "retry_backoff_ms"],
    [{ assign_to: "" }, "assign_to"],
  ])("refuses a task %j naming %s", (input, field) => {
    const decision = scenario().when({ type: "PostTask", description: "x", ...input });
    expect(decision).toMatchObject({ ok: false, code: "INVALID_COMMAND", details: { field } });
  });
});

describe("retries with backoff", () => {
  it("retries a reported failure after the backoff, doubling it, until attempts run out", () => {
    const { s, a, b, task } = awarded({ max_attempts: 3, retry_backoff_ms: 1000 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    const first = s.run({ type: "FailTask", task_id: task, agent_id: a, reason: "flaky" });
    expect(types(first)).toEqual(["task.attempt_failed", "task.retry_scheduled", "agent.status_changed"]);
    expect(eventOf(first, "task.retry_scheduled")?.data).toMatchObject({
      attempt: 2,
      failures: 1,
      max_attempts: 3,
      backoff_ms: 1000,
      reason: "flaky",
      previous_agent: a,
    });
    expect(s.state.getTask(task)).toMatchObject({ status: "waiting", failures: 1, failed_agents: [a] });
    // Waiting: no bids, no start.
    expect(s.when({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 5 })).toMatchObject({
      code: "TASK_NOT_BIDDING",
    });
    s.advance(999);
    expect(types(s.run({ type: "Tick" }))).toEqual([]);
    s.advance(1);
    expect(eventOf(s.run({ type: "Tick" }), "task.bidding")?.data).toMatchObject({
      attempt: 2,
      reason: "retry",
    });

    // The agent that failed ranks after the others, whatever it bids.
    s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 1 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 50 });
    expect(s.state.getTask(task)).toMatchObject({ status: "assigned", assigned_agent: b, attempt: 2 });
    s.given({ type: "StartTask", task_id: task, agent_id: b });
    const second = s.run({ type: "FailTask", task_id: task, agent_id: b, reason: "flaky again" });
    expect(eventOf(second, "task.retry_scheduled")?.data).toMatchObject({ backoff_ms: 2000, failures: 2 });
    s.advance(2000);
    s.given({ type: "Tick" });
    s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 1 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 1 });
    // Both failed before: price decides again among them.
    expect(s.state.getTask(task)).toMatchObject({ assigned_agent: a, attempt: 3 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    const last = s.run({ type: "FailTask", task_id: task, agent_id: a, reason: "broken" });
    expect(types(last)).toEqual(["task.failed", "agent.status_changed"]);
    expect(s.state.getTask(task)).toBeUndefined();
  });

  it("retries a timeout, and retries at once with no backoff", () => {
    const { s, a, task } = awarded({ max_attempts: 2, timeout_ms: 1000 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    s.advance(1000);
    s.given({ type: "Heartbeat", agent_id: a });
    expect(types(s.run({ type: "Tick" }))).toEqual([
      "task.timed_out",
      "task.bidding",
      "agent.status_changed",
    ]);
    expect(s.state.getTask(task)).toMatchObject({ status: "bidding", attempt: 2, failures: 1 });
  });

  it("caps the backoff", () => {
    const { s, a, task } = awarded(
      { max_attempts: 30, retry_backoff_ms: 100_000 },
      { maxRetryBackoffMs: 250_000 },
    );
    const backoffs: unknown[] = [];
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      if (attempt > 1) {
        s.advance(250_000);
        s.given({ type: "Heartbeat", agent_id: a });
        s.given({ type: "Tick" });
        s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 1 });
        s.advance(DEFAULT_RULES.defaultAuctionMs);
        s.given({ type: "Heartbeat", agent_id: a });
        s.given({ type: "Tick" });
      }
      s.given({ type: "StartTask", task_id: task, agent_id: a });
      const failed = s.run({ type: "FailTask", task_id: task, agent_id: a });
      backoffs.push((eventOf(failed, "task.retry_scheduled")?.data as { backoff_ms?: number }).backoff_ms);
    }
    expect(backoffs).toEqual([100_000, 200_000, 250_000]);
  });

  it("charges a lost agent an attempt, after the backoff, with at least the rounds lost agents always had", () => {
    const { s, a, task } = awarded({ retry_backoff_ms: 500 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    const gone = s.run({ type: "DeregisterAgent", agent_id: a });
    expect(eventOf(gone, "task.retry_scheduled")?.data).toMatchObject({
      reason: "agent left",
      max_attempts: DEFAULT_RULES.maxAuctionAttempts,
    });
  });

  it("is stopped by a cancel, and the operator's fail is final", () => {
    const { s, a, task } = awarded({ max_attempts: 3, retry_backoff_ms: 1000 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    s.given({ type: "FailTask", task_id: task, agent_id: a });
    expect(types(s.run({ type: "CancelTask", task_id: task }))).toEqual(["task.cancelled"]);
    s.advance(1000);
    expect(types(s.run({ type: "Tick" }))).toEqual([]);

    const other = awarded({ max_attempts: 3 });
    expect(types(other.s.run({ type: "FailTask", task_id: other.task }))).toEqual([
      "task.failed",
      "agent.status_changed",
    ]);
  });
});

describe("direct assignment", () => {
  it("gives a posted task straight to the agent named, with no auction", () => {
    const s = scenario();
    const a = s.agent("a", { capabilities: ["code"] });
    const posted = s.run({
      type: "PostTask",
      description: "x",
      required_capabilities: ["code"],
      assign_to: a,
    });
    expect(types(posted)).toEqual(["task.created", "task.bidding", "task.assigned", "agent.status_changed"]);
    expect(eventOf(posted, "task.assigned")?.data).toMatchObject({ by: "operator", bid_sats: null });
    expect(expectAccepted(posted).subject.task).toMatchObject({ status: "assigned", assigned_agent: a });
  });

  it("refuses an agent that cannot take the task, with a code and the field", () => {
    const s = scenario();
    const a = s.agent("a");
    expect(
      s.when({ type: "PostTask", description: "x", required_capabilities: ["gpu"], assign_to: a }),
    ).toMatchObject({
      code: "AGENT_NOT_ELIGIBLE",
      details: { field: "assign_to", missing_capabilities: ["gpu"] },
    });
    expect(s.when({ type: "PostTask", description: "x", assign_to: "ghost" })).toMatchObject({
      code: "AGENT_NOT_FOUND",
    });
    s.given({ type: "PostTask", description: "first", assign_to: a });
    expect(s.when({ type: "PostTask", description: "x", assign_to: a })).toMatchObject({
      code: "AGENT_AT_CAPACITY",
    });
    const b = s.agent("b");
    s.advance(DEFAULT_RULES.heartbeatTimeoutMs);
    s.given({ type: "Heartbeat", agent_id: a });
    s.given({ type: "Tick" });
    expect(s.when({ type: "PostTask", description: "x", assign_to: b })).toMatchObject({
      code: "AGENT_OFFLINE",
    });
  });

  it("ends a task's auction when the operator assigns it, at the agent's own bid if it bid", () => {
    const s = scenario();
    const a = s.agent("a");
    const b = s.agent("b");
    s.agent("c");
    const task = s.task();
    s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 5 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 9 });
    const assigned = s.run({ type: "AssignTask", task_id: task, agent_id: b });
    expect(eventOf(assigned, "auction.closed")?.data).toMatchObject({
      reason: "assigned by the operator",
      winner: b,
      winning_bid_sats: 9,
      bids: 2,
    });
    expect(eventOf(assigned, "task.assigned")?.data).toMatchObject({ by: "operator", bid_sats: 9 });
    expect(s.state.getTask(task)).toMatchObject({ assigned_agent: b, winning_bid_sats: 9 });
    expect(s.when({ type: "AssignTask", task_id: task, agent_id: a })).toMatchObject({
      code: "TASK_NOT_BIDDING",
    });
  });
});

describe("re-running a task", () => {
  function finalTask(s: ReturnType<typeof scenario>, command: Command) {
    const decision = expectAccepted(s.run(command));
    return decision.changes.tasks.find((task) => task.status === "failed" || task.status === "cancelled")!;
  }

  it("posts a failed task's body again as a new task, linked both ways, once", () => {
    const { s, a, task } = awarded({ timeout_ms: 9000, auction_ms: 700, ack_ms: 3000 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    const failed = finalTask(s, { type: "FailTask", task_id: task, agent_id: a, reason: "bad input" });
    // A final task has left the working set: the shell reads it from the tables.
    const rerun = expectAccepted(
      decide(withTask(s.state, failed), { type: "RetryTask", task_id: task }, s.ctx()),
    );
    expect(types(rerun)).toEqual(["task.created", "task.bidding", "task.retried"]);
    const copy = rerun.subject.task!;
    expect(copy).toMatchObject({
      status: "bidding",
      description: failed.description,
      timeout_ms: 9000,
      auction_ms: 700,
      ack_ms: 3000,
      retry_of: task,
      attempt: 1,
      failures: 0,
    });
    expect(eventOf(rerun, "task.created")?.data).toMatchObject({ retry_of: task });
    expect(eventOf(rerun, "task.retried")).toMatchObject({ task_id: task, data: { retry_task_id: copy.id } });
    const original = rerun.changes.tasks.find((t) => t.id === task)!;
    expect(original).toMatchObject({ status: "failed", retried_by: copy.id });
    expect(decide(withTask(s.state, original), { type: "RetryTask", task_id: task }, s.ctx())).toMatchObject({
      code: "TASK_ALREADY_RETRIED",
      details: { retry_task_id: copy.id },
    });
  });

  it("re-runs a cancelled task, and refuses an active or completed one", () => {
    const s = scenario();
    const task = s.task();
    expect(s.when({ type: "RetryTask", task_id: task })).toMatchObject({ code: "TASK_NOT_RETRYABLE" });
    const cancelled = finalTask(s, { type: "CancelTask", task_id: task });
    expect(decide(withTask(s.state, cancelled), { type: "RetryTask", task_id: task }, s.ctx()).ok).toBe(true);
    const done = { ...cancelled, status: "completed" as const };
    expect(decide(withTask(s.state, done), { type: "RetryTask", task_id: task }, s.ctx())).toMatchObject({
      code: "TASK_NOT_RETRYABLE",
      details: { status: "completed" },
    });
  });
});

describe("the lifecycle's invariants, for any commands", () => {
  it("never overloads an agent, keeps due_at derived, and bounds attempts", () => {
    const step = fc.record({
      kind: fc.nat(13),
      a: fc.nat(2),
      t: fc.nat(4),
      n: fc.nat(1000),
      ms: fc.constantFrom(0, 400, 1500, 40_000),
    });
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), (steps) => {
        const s = scenario();
        const agents = [
          s.agent("a", { max_concurrent: 2 }),
          s.agent("b"),
          s.agent("c", { capabilities: ["x"] }),
        ];
        const tasks: string[] = [];
        for (const p of steps) {
          s.advance(p.ms);
          const agent = agents[p.a] as string;
          const task = tasks[p.t % Math.max(1, tasks.length)] ?? "none";
          const commands: Command[] = [
            {
              type: "PostTask",
              description: `t${p.n}`,
              auction_ms: 1000,
              ack_ms: 500 + (p.n % 3) * 500,
              ...(p.n % 2 === 0 ? { timeout_ms: 1000 } : {}),
              max_attempts: 1 + (p.n % 4),
              retry_backoff_ms: (p.n % 3) * 400,
              ...(p.n % 5 === 0 ? { required_capabilities: ["x"] } : {}),
              ...(p.n % 6 === 0 ? { assign_to: agent } : {}),
              ...(p.n % 4 === 1 && tasks.length > 0 ? { depends_on: [task] } : {}),
            },
            { type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 1 + (p.n % 40) },
            { type: "StartTask", task_id: task, agent_id: agent },
            { type: "CompleteTask", task_id: task, agent_id: agent },
            { type: "FailTask", task_id: task, agent_id: agent },
            { type: "CancelTask", task_id: task },
            { type: "Heartbeat", agent_id: agent },
            { type: "Tick" },
            { type: "Tick" },
            { type: "AssignTask", task_id: task, agent_id: agent },
            { type: "ReleaseTask", task_id: task, agent_id: agent },
            { type: "Heartbeat", agent_id: agent },
            { type: "CloseAuction", task_id: task },
            { type: "Recover" },
          ];
          const decision = s.run(commands[p.kind] as Command);
          if (decision.ok && decision.subject.task && !tasks.includes(decision.subject.task.id))
            tasks.push(decision.subject.task.id);
          for (const id of agents) {
            const agent = s.state.getAgent(id)!;
            expect(s.state.tasksHeldBy(id).length).toBeLessThanOrEqual(agent.max_concurrent);
          }
          for (const id of tasks) {
            const current = s.state.getTask(id);
            if (current === undefined) continue; // final
            expect(current.due_at).toBe(dueAt(current));
            expect(current.failures).toBeLessThan(
              Math.max(current.max_attempts, DEFAULT_RULES.maxAuctionAttempts),
            );
            if (current.status === "assigned" || current.status === "running")
              expect(current.assigned_agent).not.toBeNull();
            // Waiting for a retry, or on dependencies that are all still active: never on a task
            // that has ended (it would wait for ever).
            if (current.status === "waiting") {
              expect(current.opens_at !== null || current.waiting_on.length > 0).toBe(true);
              for (const dependency of current.waiting_on) expect(s.state.getTask(dependency)).toBeDefined();
            }
            if (current.status === "bidding") expect(current.assigned_agent).toBeNull();
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("dependencies", () => {
  /** A task run to completion (or to `end`) by its own agent. */
  function finish(s: ReturnType<typeof scenario>, task: string, end: "complete" | "fail" = "complete") {
    const agent = s.agent(`for ${task}`);
    s.given({ type: "SubmitBid", task_id: task, agent_id: agent, bid_sats: 1 });
    if (s.state.getTask(task)?.status === "bidding") s.given({ type: "CloseAuction", task_id: task });
    s.given({ type: "StartTask", task_id: task, agent_id: agent });
    return s.run(
      end === "complete"
        ? { type: "CompleteTask", task_id: task, agent_id: agent, result: "the numbers" }
        : { type: "FailTask", task_id: task, agent_id: agent, reason: "no data" },
    );
  }

  it("waits until every dependency has completed, then opens its auction", () => {
    const s = scenario();
    const first = s.task();
    const second = s.task();
    const posted = s.run({ type: "PostTask", description: "report", depends_on: [first, second] });
    expect(types(posted)).toEqual(["task.created"]);
    const report = expectAccepted(posted).subject.task!;
    expect(report).toMatchObject({
      status: "waiting",
      depends_on: [first, second],
      waiting_on: [first, second],
      due_at: null,
    });
    expect(s.when({ type: "SubmitBid", task_id: report.id, agent_id: s.agent(), bid_sats: 3 })).toMatchObject(
      {
        code: "TASK_NOT_BIDDING",
      },
    );
    expect(types(finish(s, first))).not.toContain("task.bidding");
    expect(s.state.getTask(report.id)).toMatchObject({ status: "waiting", waiting_on: [second] });
    const last = finish(s, second);
    expect(eventOf(last, "task.bidding")).toMatchObject({
      task_id: report.id,
      data: { attempt: 1, reason: "dependencies completed" },
    });
    expect(s.state.getTask(report.id)).toMatchObject({ status: "bidding", waiting_on: [] });
  });

  it("cancels dependents, and theirs, naming the dependency that failed for good", () => {
    const s = scenario();
    const root = s.task();
    const middle = expectAccepted(s.run({ type: "PostTask", description: "m", depends_on: [root] })).subject
      .task!.id;
    const leaf = expectAccepted(s.run({ type: "PostTask", description: "l", depends_on: [middle] })).subject
      .task!.id;
    const failed = finish(s, root, "fail");
    const cancelled = expectAccepted(failed).events.filter((event) => event.event_type === "task.cancelled");
    expect(cancelled.map((event) => [event.task_id, event.data])).toEqual([
      [middle, { reason: `dependency ${root} failed`, previous_status: "waiting", dependency: root }],
      [leaf, { reason: `dependency ${middle} cancelled`, previous_status: "waiting", dependency: middle }],
    ]);
    expect(s.state.getTask(leaf)).toBeUndefined();
  });

  it("does not cancel dependents while a failed dependency still has attempts left", () => {
    const s = scenario();
    const root = s.task({ max_attempts: 2 });
    const dependent = expectAccepted(s.run({ type: "PostTask", description: "d", depends_on: [root] }))
      .subject.task!.id;
    expect(types(finish(s, root, "fail"))).not.toContain("task.cancelled");
    expect(s.state.getTask(dependent)?.status).toBe("waiting");
  });

  it("refuses unknown, repeated and failed dependencies, naming each, and opens at once on completed ones", () => {
    const s = scenario();
    const first = s.task();
    expect(s.when({ type: "PostTask", description: "x", depends_on: [first, "ghost"] })).toMatchObject({
      code: "INVALID_COMMAND",
      details: { field: "depends_on[1]" },
    });
    expect(s.when({ type: "PostTask", description: "x", depends_on: [first, first] })).toMatchObject({
      details: { field: "depends_on[1]" },
    });
    expect(
      s.when({ type: "PostTask", description: "x", depends_on: "nope" as unknown as string[] }),
    ).toMatchObject({
      details: { field: "depends_on" },
    });
    const cancelled = expectAccepted(s.run({ type: "CancelTask", task_id: first })).changes.tasks[0]!;
    const view = withTask(s.state, cancelled);
    expect(decide(view, { type: "PostTask", description: "x", depends_on: [first] }, s.ctx())).toMatchObject({
      code: "DEPENDENCY_FAILED",
      details: { field: "depends_on[0]", dependency: first, status: "cancelled" },
    });
    const done = { ...cancelled, status: "completed" as const };
    const opened = expectAccepted(
      decide(withTask(s.state, done), { type: "PostTask", description: "x", depends_on: [first] }, s.ctx()),
    );
    expect(opened.subject.task).toMatchObject({ status: "bidding", depends_on: [first], waiting_on: [] });
  });

  it("cannot be assigned directly while a dependency is pending", () => {
    const s = scenario();
    const first = s.task();
    expect(
      s.when({ type: "PostTask", description: "x", depends_on: [first], assign_to: s.agent() }),
    ).toMatchObject({
      details: { field: "assign_to" },
    });
  });
});

describe("the award rule best_value", () => {
  it("ranks bids by price over the bidder's smoothed record, and records every score", () => {
    const s = scenario();
    const proven = s.agent("proven");
    const flaky = s.agent("flaky");
    // Records as decide keeps them: proven completed 10, flaky completed 2 and timed out 3.
    for (const [id, record] of [
      [proven, { runs_completed: 10 }],
      [flaky, { runs_completed: 2, runs_timed_out: 3 }],
    ] as const)
      s.state.apply({ agents: [{ ...s.state.getAgent(id)!, ...record }], tasks: [], bids: [] });
    expect(reliability({ runs_completed: 0, runs_failed: 0, runs_timed_out: 0 })).toBe(0.8);
    expect(reliability(s.state.getAgent(proven)!)).toBeCloseTo(14 / 15);
    expect(reliability(s.state.getAgent(flaky)!)).toBeCloseTo(6 / 13);

    const cheapest = s.task();
    s.given({ type: "SubmitBid", task_id: cheapest, agent_id: flaky, bid_sats: 60 });
    s.given({ type: "SubmitBid", task_id: cheapest, agent_id: proven, bid_sats: 100 });
    expect(s.state.getTask(cheapest)?.assigned_agent).toBe(flaky); // lowest: the price alone

    const s2 = scenario();
    const p2 = s2.agent("proven");
    const f2 = s2.agent("flaky");
    s2.state.apply({
      agents: [
        { ...s2.state.getAgent(p2)!, runs_completed: 10 },
        { ...s2.state.getAgent(f2)!, runs_completed: 2, runs_timed_out: 3 },
      ],
      tasks: [],
      bids: [],
    });
    const task = s2.task({ award: "best_value" });
    s2.given({ type: "SubmitBid", task_id: task, agent_id: f2, bid_sats: 60 });
    const decision = s2.run({ type: "SubmitBid", task_id: task, agent_id: p2, bid_sats: 100 });
    expect(s2.state.getTask(task)?.assigned_agent).toBe(p2);
    expect(eventOf(decision, "auction.closed")?.data).toMatchObject({
      winner: p2,
      award: "best_value",
      scores: [
        { agent_id: p2, bid_sats: 100, reliability: 0.933, score: 107.143 },
        { agent_id: f2, bid_sats: 60, reliability: 0.462, score: 130 },
      ],
    });
  });

  it("keeps each agent's record as its runs end", () => {
    const { s, a, b, task } = awarded({ timeout_ms: 1000, max_attempts: 3 });
    s.given({ type: "StartTask", task_id: task, agent_id: a });
    s.advance(1000);
    s.given({ type: "Heartbeat", agent_id: a });
    s.given({ type: "Heartbeat", agent_id: b });
    s.given({ type: "Tick" }); // a times out
    s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 5 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 5 });
    s.given({ type: "StartTask", task_id: task, agent_id: b });
    s.given({ type: "FailTask", task_id: task, agent_id: b });
    expect(s.state.getAgent(a)).toMatchObject({ runs_completed: 0, runs_failed: 0, runs_timed_out: 1 });
    expect(s.state.getAgent(b)).toMatchObject({ runs_completed: 0, runs_failed: 1, runs_timed_out: 0 });
    s.advance(0);
    s.given({ type: "Tick" });
    const again = s.state.getTask(task)!;
    expect(again.status).toBe("bidding");
    s.given({ type: "SubmitBid", task_id: task, agent_id: a, bid_sats: 5 });
    s.given({ type: "SubmitBid", task_id: task, agent_id: b, bid_sats: 5 });
    const winner = s.state.getTask(task)!.assigned_agent!;
    s.given({ type: "StartTask", task_id: task, agent_id: winner });
    s.given({ type: "CompleteTask", task_id: task, agent_id: winner });
    expect(s.state.getAgent(winner)?.runs_completed).toBe(1);
  });

  it("refuses an unknown award rule, naming it", () => {
    expect(
      scenario().when({ type: "PostTask", description: "x", award: "cheapest" as unknown as "lowest" }),
    ).toMatchObject({ code: "INVALID_COMMAND", details: { field: "award" } });
  });
});

describe("liveness beyond heartbeats", () => {
  it("does not wait for a zombie (heartbeating, its stream gone) before closing early", () => {
    const s = scenario();
    const listening = s.agent("listening");
    const zombie = s.agent("zombie");
    const poller = s.agent("poller"); // never opened a stream: waited for, as before
    s.given({ type: "StreamSeen", agent_id: listening });
    s.given({ type: "StreamSeen", agent_id: zombie });
    s.given({ type: "StreamClosed", agent_id: zombie });
    expect(s.state.getAgent(zombie)?.stream_until).toBe(new Date(s.now).toISOString());
    const task = s.task();
    s.given({ type: "SubmitBid", task_id: task, agent_id: listening, bid_sats: 9 });
    expect(s.state.getTask(task)?.status).toBe("bidding"); // the poller has not bid
    const closed = s.run({ type: "SubmitBid", task_id: task, agent_id: poller, bid_sats: 7 });
    expect(eventOf(closed, "auction.closed")?.data).toMatchObject({ reason: "all bids in", bids: 2 });
  });

  it("counts a stream as gone once its lease runs out unrenewed (the server that vouched for it died)", () => {
    const s = scenario();
    const a = s.agent("a");
    const b = s.agent("b");
    s.given({ type: "StreamSeen", agent_id: b });
    s.advance(DEFAULT_RULES.streamLeaseMs - 1);
    s.given({ type: "Heartbeat", agent_id: b });
    const first = s.task();
    s.given({ type: "SubmitBid", task_id: first, agent_id: a, bid_sats: 3 });
    expect(s.state.getTask(first)?.status).toBe("bidding"); // b still listening: waited for
    s.advance(1);
    s.given({ type: "CancelTask", task_id: first });
    const second = s.task();
    const closed = s.run({ type: "SubmitBid", task_id: second, agent_id: a, bid_sats: 3 });
    expect(eventOf(closed, "auction.closed")?.data).toMatchObject({ reason: "all bids in" });
  });
});
