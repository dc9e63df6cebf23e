import { describe, expect, it } from "vitest";
import { buildTestApp, OPERATOR_KEY, type EngineName } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

/** A 422 for a retry key (an Idempotency-Key, a call_id) reused with another body, naming it. */
function expectKeyReused(response: { statusCode: number; json<T>(): T }, key: string, details: Json) {
  expect(response.statusCode).toBe(422);
  expect(response.json<Json>().error).toMatchObject({
    code: "IDEMPOTENCY_KEY_REUSED",
    message: expect.stringContaining(key) as string,
    details,
  });
}

describe.each(ENGINES)("the API on $name", ({ name: engine }) => {
  /** The app under test on this engine. */
  const build = (options: Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine"> = {}) =>
    buildTestApp<EngineName>({ ...options, engine });

  describe("agents", () => {
    it("registers an agent and shows its token once, storing only a hash", async () => {
      const t = await build();
      const response = await t.app.inject({
        method: "POST",
        url: "/api/agents",
        headers: t.operator,
        payload: { name: "coder", capabilities: ["code"], max_concurrent: 2 },
      });
      expect(response.statusCode).toBe(201);
      const { agent, token } = response.json<Json>();
      expect(agent).toMatchObject({
        name: "coder",
        status: "idle",
        capabilities: ["code"],
        max_concurrent: 2,
        stats: { bids: 0, wins: 0, tasks_completed: 0, tasks_failed: 0, earned_sats: 0, win_rate: 0 },
      });
      expect(token).toMatch(/^swarm_[A-Za-z0-9_-]{43}$/);
      const dump = JSON.stringify(await t.sql("SELECT * FROM agent_tokens"));
      expect(dump).not.toContain(token);
      expect(dump).toMatch(/[0-9a-f]{64}/);
      const read = await t.app.inject({
        method: "GET",
        url: `/api/agents/${agent.id as string}`,
        headers: { authorization: `Bearer ${token}` },
      });
      expect(read.json<Json>().agent).not.toHaveProperty("token");
    });

    it("needs the operator key to register, and refuses agents doing it", async () => {
      const t = await build();
      const worker = await t.agent();
      const anonymous = await t.app.inject({ method: "POST", url: "/api/agents", payload: { name: "x" } });
      expect(anonymous.statusCode).toBe(401);
      expect(anonymous.json<Json>().error.code).toBe("UNAUTHORIZED");
      const asAgent = await t.app.inject({
        method: "POST",
        url: "/api/agents",
        headers: worker.auth,
        payload: { name: "x" },
      });
      expect(asAgent.statusCode).toBe(403);
      const wrongKey = await t.app.inject({
        method: "POST",
        url: "/api/agents",
        headers: { authorization: "Bearer nope" },
        payload: { name: "x" },
      });
      expect(wrongKey.statusCode).toBe(401);
      const badScheme = await t.app.inject({
        method: "POST",
        url: "/api/agents",
        headers: { authorization: `Basic ${OPERATOR_KEY}` },
        payload: { name: "x" },
      });
      expect(badScheme.json<Json>().error).toMatchObject({ code: "UNAUTHORIZED" });
    });

    it.each([
      [{}, "body.name"],
      [{ name: "" }, "body.name"],
      [{ name: "x", max_concurrent: 0 }, "body.max_concurrent"],
      [{ name: "x", capabilities: "code" }, "body.capabilities"],
      [{ name: "x", colour: "red" }, "body.colour"],
    ])("refuses registration %j with a 400 naming %s", async (payload, field) => {
      const t = await build();
      const response = await t.app.inject({
        method: "POST",
        url: "/api/agents",
        headers: t.operator,
        payload,
      });
      expect(response.statusCode).toBe(400);
      expect(response.json<Json>().error).toMatchObject({ code: "VALIDATION_FAILED", details: { field } });
      expect(await t.eventLog.latestSeq()).toBe(0);
    });

    it("lists and reads agents, with 404 for an unknown one", async () => {
      const t = await build();
      const a = await t.agent("a");
      await t.agent("b");
      const list = await t.app.inject({ method: "GET", url: "/api/agents", headers: a.auth });
      expect(list.json<Json>().agents.map((x: Json) => x.name)).toEqual(["a", "b"]);
      const missing = await t.app.inject({ method: "GET", url: "/api/agents/nope", headers: t.operator });
      expect(missing.statusCode).toBe(404);
      expect(missing.json<Json>().error.code).toBe("AGENT_NOT_FOUND");
      expect((await t.app.inject({ method: "GET", url: "/api/agents" })).statusCode).toBe(401);
    });

    it("takes heartbeats from the agent itself only", async () => {
      const t = await build();
      const a = await t.agent("a");
      const b = await t.agent("b");
      expect(
        (await t.app.inject({ method: "POST", url: `/api/agents/${a.id}/heartbeat`, headers: a.auth }))
          .statusCode,
      ).toBe(200);
      const other = await t.app.inject({
        method: "POST",
        url: `/api/agents/${a.id}/heartbeat`,
        headers: b.auth,
      });
      expect(other.statusCode).toBe(403);
      expect(other.json<Json>().error.code).toBe("FORBIDDEN");
      expect(
        (await t.app.inject({ method: "POST", url: `/api/agents/${a.id}/heartbeat`, headers: t.operator }))
          .statusCode,
      ).toBe(401);
    });

    it("refuses one agent's token on another agent's task, for every action, writing nothing", async () => {
      const t = await build({ rules: { closeWhenAllBid: false } });
      const owner = await t.agent("owner");
      const intruder = await t.agent("intruder");
      const task = await t.task({ auction_ms: 1000 });
      await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/bids`,
        headers: owner.auth,
        payload: { bid_sats: 5 },
      });
      t.clock.advance(1000);
      await t.tick();
      await t.app.inject({ method: "POST", url: `/api/tasks/${task}/start`, headers: owner.auth });
      const before = await t.eventLog.latestSeq();
      const attempts: [string, object][] = [
        ["start", {}],
        ["complete", { result: "stolen" }],
        ["fail", { reason: "sabotage" }],
        ["tools", { tool: "x", phase: "called" }],
        ["release", { reason: "sabotage" }],
        ["cancel", { reason: "sabotage" }],
      ];
      for (const [action, payload] of attempts) {
        const answer = await t.app.inject({
          method: "POST",
          url: `/api/tasks/${task}/${action}`,
          headers: intruder.auth,
          payload,
        });
        expect(answer.statusCode, action).toBe(403);
      }
      const deregister = await t.app.inject({
        method: "DELETE",
        url: `/api/agents/${owner.id}`,
        headers: intruder.auth,
      });
      expect(deregister.statusCode).toBe(403);
      expect(await t.eventLog.latestSeq()).toBe(before);
      expect(await t.coordinator.getTask(task)).toMatchObject({
        status: "running",
        assigned_agent: owner.id,
      });
    });

    it("lets the agent or the operator deregister it, nobody else", async () => {
      const t = await build();
      const a = await t.agent("a");
      const b = await t.agent("b");
      expect(
        (await t.app.inject({ method: "DELETE", url: `/api/agents/${a.id}`, headers: b.auth })).statusCode,
      ).toBe(403);
      const self = await t.app.inject({ method: "DELETE", url: `/api/agents/${a.id}`, headers: a.auth });
      expect(self.json<Json>().agent).toMatchObject({ status: "offline" });
      expect(self.json<Json>().agent.left_at).not.toBeNull();
      expect(
        (await t.app.inject({ method: "DELETE", url: `/api/agents/${b.id}`, headers: t.operator }))
          .statusCode,
      ).toBe(200);
      const again = await t.app.inject({ method: "DELETE", url: `/api/agents/${b.id}`, headers: t.operator });
      expect(again.statusCode).toBe(409);
      expect(again.json<Json>().error.code).toBe("AGENT_LEFT");
    });
  });

  describe("tasks", () => {
    it("walks a task through its whole life over HTTP", async () => {
      const t = await build({ rules: { closeWhenAllBid: false } });
      const a = await t.agent("a");
      const b = await t.agent("b");
      const task = await t.task({ auction_ms: 1000 });
      const bid = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/bids`,
        headers: a.auth,
        payload: { bid_sats: 50 },
      });
      expect(bid.statusCode).toBe(201);
      expect(bid.json<Json>().bid).toMatchObject({
        task_id: task,
        agent_id: a.id,
        bid_sats: 50,
        attempt: 1,
        outcome: null,
      });
      await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/bids`,
        headers: b.auth,
        payload: { bid_sats: 40 },
      });
      t.clock.advance(1000);
      await t.tick();
      const detail = (
        await t.app.inject({ method: "GET", url: `/api/tasks/${task}`, headers: t.operator })
      ).json<Json>();
      expect(detail.task).toMatchObject({ status: "assigned", assigned_agent: b.id, winning_bid_sats: 40 });
      expect(detail.bids.map((x: Json) => [x.agent_id, x.outcome])).toEqual([
        [a.id, "lost"],
        [b.id, "won"],
      ]);
      const notYours = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/start`,
        headers: a.auth,
      });
      expect(notYours.statusCode).toBe(403);
      expect(notYours.json<Json>().error.code).toBe("NOT_ASSIGNED_AGENT");
      expect(
        (
          await t.app.inject({ method: "POST", url: `/api/tasks/${task}/start`, headers: b.auth })
        ).json<Json>().task.status,
      ).toBe("running");
      const tool = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/tools`,
        headers: b.auth,
        payload: { tool: "search", phase: "called", input: { q: "x" } },
      });
      expect(tool.statusCode).toBe(201);
      expect(tool.json<Json>().event).toMatchObject({
        event_type: "tool.called",
        source: b.id,
        task_id: task,
        data: { tool: "search" },
      });
      const done = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/complete`,
        headers: b.auth,
        payload: { result: "42" },
      });
      expect(done.json<Json>().task).toMatchObject({ status: "completed", result: "42" });
      const timeline = (
        await t.app.inject({ method: "GET", url: `/api/tasks/${task}/events`, headers: t.operator })
      ).json<Json>();
      expect(timeline.events.map((e: Json) => e.event_type)).toEqual([
        "task.created",
        "task.bidding",
        "bid.submitted",
        "bid.submitted",
        "auction.closed",
        "task.assigned",
        "task.started",
        "tool.called",
        "task.completed",
      ]);
      const stats = (
        await t.app.inject({ method: "GET", url: `/api/agents/${b.id}`, headers: t.operator })
      ).json<Json>().agent.stats;
      expect(stats).toMatchObject({ bids: 1, wins: 1, tasks_completed: 1, earned_sats: 40, win_rate: 1 });
    });

    it("stores a repeated bid or tool report once: a retry after a lost answer gets 200 and the first record", async () => {
      const t = await build({ rules: { closeWhenAllBid: false } });
      const a = await t.agent("a");
      const task = await t.task({ auction_ms: 1000 });
      const bid = () =>
        t.app.inject({
          method: "POST",
          url: `/api/tasks/${task}/bids`,
          headers: a.auth,
          payload: { bid_sats: 70 },
        });
      expect((await bid()).statusCode).toBe(201);
      const again = await bid();
      expect(again.statusCode).toBe(200);
      expect(again.json<Json>().bid).toMatchObject({ agent_id: a.id, bid_sats: 70 });
      t.clock.advance(1000);
      await t.tick();
      await t.app.inject({ method: "POST", url: `/api/tasks/${task}/start`, headers: a.auth });
      const report = (phase: string) =>
        t.app.inject({
          method: "POST",
          url: `/api/tasks/${task}/tools`,
          headers: a.auth,
          payload: { tool: "search", phase, call_id: "call-1", input: { q: "x" } },
        });
      // Two copies in flight together, then one more after both committed.
      const [first, twin] = await Promise.all([report("called"), report("called")]);
      const late = await report("called");
      expect([first.statusCode, twin.statusCode, late.statusCode].sort()).toEqual([200, 200, 201]);
      const ids = new Set([first, twin, late].map((r) => r.json<Json>().event.id));
      expect(ids.size).toBe(1);
      expect((await report("completed")).statusCode).toBe(201); // another phase of the call is news
      const timeline = (await t.eventLog.getTaskEvents(task)).map((e) => e.event_type);
      expect(timeline.filter((type) => type === "bid.submitted")).toHaveLength(1);
      expect(timeline.filter((type) => type === "tool.called")).toHaveLength(1);
      expect(timeline.filter((type) => type === "tool.completed")).toHaveLength(1);
    });

    it("refuses a tool report's call_id reused with a different body (422 naming it), stored or in flight, writing nothing", async () => {
      const t = await build();
      const a = await t.agent("a");
      const task = await t.task({ auction_ms: 1000 });
      await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/bids`,
        headers: a.auth,
        payload: { bid_sats: 10 },
      });
      await t.app.inject({ method: "POST", url: `/api/tasks/${task}/start`, headers: a.auth });
      const report = (call_id: string, body: Record<string, unknown>) =>
        t.app.inject({
          method: "POST",
          url: `/api/tasks/${task}/tools`,
          headers: a.auth,
          payload: { tool: "search", phase: "called", call_id, ...body },
        });
      expect((await report("call-1", { input: { q: "x" } })).statusCode).toBe(201);
      expect((await report("call-1", { input: { q: "x" } })).statusCode).toBe(200);
      const seq = await t.eventLog.latestSeq();
      for (const other of [{ input: { q: "y" } }, { input: { q: "x" }, tool: "fetch" }, {}]) {
        expectKeyReused(await report("call-1", other), "call-1", {
          field: "body.call_id",
          call_id: "call-1",
        });
      }
      expect(await t.eventLog.latestSeq()).toBe(seq);
      // Two reports in flight together with one call_id and different bodies: one stored, one refused.
      // Which reaches the coordinator first is up to the race (on PostgreSQL each request's token
      // is looked up in the database first); the stored one is the one answered 201.
      const raced = await Promise.all([report("call-2", { input: 1 }), report("call-2", { input: 2 })]);
      expect(raced.map((r) => r.statusCode).sort()).toEqual([201, 422]);
      const storedInput = raced[0].statusCode === 201 ? "1" : "2";
      const called = (await t.eventLog.getTaskEvents(task)).filter((e) => e.event_type === "tool.called");
      expect(called.map((e) => [e.data.call_id, e.data.input])).toEqual([
        ["call-1", '{"q":"x"}'],
        ["call-2", storedInput],
      ]);
    });

    it("returns the same task for a retried post with the same Idempotency-Key", async () => {
      const t = await build();
      const post = (key: string) =>
        t.app.inject({
          method: "POST",
          url: "/api/tasks",
          headers: { ...t.operator, "idempotency-key": key },
          payload: { description: "once" },
        });
      const first = await post("key-1");
      const retry = await post("key-1");
      const other = await post("key-2");
      expect([first.statusCode, retry.statusCode, other.statusCode]).toEqual([201, 200, 201]);
      expect(retry.json<Json>().task.id).toBe(first.json<Json>().task.id);
      expect(other.json<Json>().task.id).not.toBe(first.json<Json>().task.id);
      const together = await Promise.all([post("key-3"), post("key-3"), post("key-3")]);
      expect(new Set(together.map((r) => r.json<Json>().task.id)).size).toBe(1);
      expect(together.map((r) => r.statusCode).sort()).toEqual([200, 200, 201]);
      expect((await t.eventLog.listEvents({ types: "task.created" })).events).toHaveLength(3);
      const bad = await post("has space");
      expect(bad.statusCode).toBe(400);
    });

    it("refuses an Idempotency-Key reused with a different body (422 naming the key), writing nothing", async () => {
      const t = await build();
      const post = (payload: Record<string, unknown>) =>
        t.app.inject({
          method: "POST",
          url: "/api/tasks",
          headers: { ...t.operator, "idempotency-key": "key-1" },
          payload,
        });
      const first = await post({ description: "once", required_capabilities: ["code"], max_bid_sats: 50 });
      expect(first.statusCode).toBe(201);
      // The same body with its keys in another order is the same request.
      const retry = await post({ max_bid_sats: 50, required_capabilities: ["code"], description: "once" });
      expect(retry.statusCode).toBe(200);
      expect(retry.json<Json>().task.id).toBe(first.json<Json>().task.id);
      const seq = await t.eventLog.latestSeq();
      for (const other of [
        { description: "twice", required_capabilities: ["code"], max_bid_sats: 50 },
        { description: "once", required_capabilities: ["code"] },
        { description: "once", required_capabilities: ["code"], max_bid_sats: 51 },
      ]) {
        expectKeyReused(await post(other), "key-1", {
          field: "headers.idempotency-key",
          idempotency_key: "key-1",
        });
      }
      expect(await t.eventLog.latestSeq()).toBe(seq);
      expect((await t.coordinator.store.listTasks({ limit: 50 })).tasks).toHaveLength(1);
      // A key stored before digests were kept has nothing to compare with: it answers its task.
      await t.sql("UPDATE idempotency_keys SET request_digest = NULL");
      const legacy = await post({ description: "twice" });
      expect(legacy.statusCode).toBe(200);
      expect(legacy.json<Json>().task.id).toBe(first.json<Json>().task.id);
    });

    it("answers two posts in flight together with one key and different bodies with one 201 and one 422", async () => {
      const t = await build();
      const post = (description: string) =>
        t.app.inject({
          method: "POST",
          url: "/api/tasks",
          headers: { ...t.operator, "idempotency-key": "raced" },
          payload: { description },
        });
      const answers = await Promise.all([post("first"), post("second")]);
      expect(answers.map((r) => r.statusCode).sort()).toEqual([201, 422]);
      const created = answers.find((r) => r.statusCode === 201)!.json<Json>().task;
      expect(answers.find((r) => r.statusCode === 422)!.json<Json>().error.code).toBe(
        "IDEMPOTENCY_KEY_REUSED",
      );
      expect((await t.coordinator.store.listTasks({ limit: 50 })).tasks.map((task) => task.id)).toEqual([
        created.id,
      ]);
      expect((await t.eventLog.listEvents({ types: "task.created" })).events).toHaveLength(1);
    });

    it("lists tasks newest first, filtered and paged by cursor", async () => {
      const t = await build();
      const ids: string[] = [];
      for (let i = 0; i < 5; i += 1) ids.push(await t.task({ description: `task ${i}` }));
      await t.app.inject({ method: "POST", url: `/api/tasks/${ids[1]!}/cancel`, headers: t.operator });
      const page1 = (
        await t.app.inject({ method: "GET", url: "/api/tasks?limit=2", headers: t.operator })
      ).json<Json>();
      expect(page1.tasks.map((x: Json) => x.id)).toEqual([ids[4], ids[3]]);
      const page2 = (
        await t.app.inject({
          method: "GET",
          url: `/api/tasks?limit=2&cursor=${page1.next_cursor as string}`,
          headers: t.operator,
        })
      ).json<Json>();
      expect(page2.tasks.map((x: Json) => x.id)).toEqual([ids[2], ids[1]]);
      const cancelled = (
        await t.app.inject({ method: "GET", url: "/api/tasks?status=cancelled", headers: t.operator })
      ).json<Json>();
      expect(cancelled).toEqual({
        tasks: [expect.objectContaining({ id: ids[1], status: "cancelled" })],
        next_cursor: null,
      });
      const bad = await t.app.inject({
        method: "GET",
        url: "/api/tasks?status=sleeping",
        headers: t.operator,
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.json<Json>().error).toMatchObject({
        code: "VALIDATION_FAILED",
        details: { field: "querystring.status" },
      });
    });

    it("answers each refusal with its code and status", async () => {
      const t = await build({ rules: { closeWhenAllBid: false } });
      const coder = await t.agent("coder", { capabilities: ["code"] });
      const writer = await t.agent("writer", { capabilities: ["writing"] });
      const task = await t.task({ required_capabilities: ["code"], max_bid_sats: 100 });
      const call = (method: "POST" | "GET", url: string, headers: Record<string, string>, payload?: Json) =>
        t.app.inject({ method, url, headers, ...(payload ? { payload } : {}) });
      const expectError = async (responsePromise: ReturnType<typeof call>, status: number, code: string) => {
        const response = await responsePromise;
        expect(response.statusCode).toBe(status);
        expect(response.json<Json>().error.code).toBe(code);
      };
      await expectError(
        call("POST", `/api/tasks/${task}/bids`, writer.auth, { bid_sats: 5 }),
        409,
        "AGENT_NOT_ELIGIBLE",
      );
      await expectError(
        call("POST", `/api/tasks/${task}/bids`, coder.auth, { bid_sats: 500 }),
        400,
        "BID_OUT_OF_RANGE",
      );
      await expectError(
        call("POST", `/api/tasks/${task}/bids`, coder.auth, { bid_sats: "ten" }),
        400,
        "VALIDATION_FAILED",
      );
      await expectError(
        call("POST", `/api/tasks/${task}/bids`, t.operator, { bid_sats: 5 }),
        401,
        "UNAUTHORIZED",
      );
      await expectError(
        call("POST", "/api/tasks/nope/bids", coder.auth, { bid_sats: 5 }),
        404,
        "TASK_NOT_FOUND",
      );
      await expectError(call("POST", `/api/tasks/${task}/complete`, coder.auth, {}), 409, "TASK_NOT_ACTIVE");
      await expectError(call("POST", `/api/tasks/${task}/cancel`, coder.auth, {}), 403, "FORBIDDEN");
      await expectError(call("GET", "/api/tasks/nope", t.operator), 404, "TASK_NOT_FOUND");
      await expectError(call("GET", "/api/tasks/nope/events", t.operator), 404, "TASK_NOT_FOUND");
      const cancelled = await call("POST", `/api/tasks/${task}/cancel`, t.operator, {
        reason: "changed my mind",
      });
      expect(cancelled.json<Json>().task).toMatchObject({ status: "cancelled", error: "changed my mind" });
      await expectError(call("POST", `/api/tasks/${task}/cancel`, t.operator, {}), 409, "TASK_FINAL");
    });

    it("lets the operator fail a task, and the assigned agent fail its own", async () => {
      const t = await build();
      const a = await t.agent("a");
      const first = await t.task();
      await t.app.inject({
        method: "POST",
        url: `/api/tasks/${first}/bids`,
        headers: a.auth,
        payload: { bid_sats: 1 },
      });
      const byAgent = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${first}/fail`,
        headers: a.auth,
        payload: { reason: "boom" },
      });
      expect(byAgent.json<Json>().task).toMatchObject({ status: "failed", error: "boom" });
      const second = await t.task();
      await t.app.inject({
        method: "POST",
        url: `/api/tasks/${second}/bids`,
        headers: a.auth,
        payload: { bid_sats: 1 },
      });
      expect(
        (await t.app.inject({ method: "POST", url: `/api/tasks/${second}/fail`, payload: {} })).statusCode,
      ).toBe(401);
      const byOperator = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${second}/fail`,
        headers: t.operator,
        payload: {},
      });
      expect(byOperator.json<Json>().task).toMatchObject({
        status: "failed",
        error: "failed by the operator",
      });
    });

    it("lets the assigned agent hand its task back: auctioned again, not failed; 409 when it is not held, and listed in OpenAPI", async () => {
      const t = await build();
      const holder = await t.agent("holder");
      const task = await t.task();
      expect((await t.bid(holder, task, 7)).statusCode).toBe(201); // the only agent: it wins at once
      await t.app.inject({ method: "POST", url: `/api/tasks/${task}/start`, headers: holder.auth });
      const release = (headers: Record<string, string>, payload: object = { reason: "stopping" }) =>
        t.app.inject({ method: "POST", url: `/api/tasks/${task}/release`, headers, payload });

      for (const [payload, field] of [
        [{ reason: "" }, "body.reason"],
        [{ reason: "x".repeat(1001) }, "body.reason"],
        [{ reason: "ok", force: true }, "body.force"],
      ] as const) {
        const refused = await release(holder.auth, payload);
        expect(refused.statusCode, field).toBe(400);
        expect(refused.json<Json>().error).toMatchObject({ code: "VALIDATION_FAILED", details: { field } });
      }
      expect((await release(t.operator)).statusCode).toBe(401); // an agent's own act, not the operator's
      expect((await t.coordinator.getTask(task))?.status).toBe("running");

      const handedBack = await release(holder.auth, {
        reason: "agent stopping: not finished within its grace",
      });
      expect(handedBack.statusCode).toBe(200);
      expect(handedBack.json<Json>().task).toMatchObject({
        id: task,
        status: "bidding",
        attempt: 2,
        releases: 1,
        assigned_agent: null,
        error: null,
      });
      const timeline = await t.app.inject({
        method: "GET",
        url: `/api/tasks/${task}/events`,
        headers: t.operator,
      });
      const events = timeline.json<Json>().events as Json[];
      expect(events.map((e) => e.event_type).slice(-2)).toEqual(["task.released", "task.bidding"]);
      expect(events.find((e) => e.event_type === "task.released")).toMatchObject({
        source: holder.id,
        agent_id: holder.id,
        data: {
          reason: "agent stopping: not finished within its grace",
          attempt: 1,
          previous_status: "running",
        },
      });
      expect(events.some((e) => e.event_type === "task.failed")).toBe(false);

      // Another agent sees that it was handed back, not the reason its agent gave.
      const other = await t.agent("other");
      const seen = await t.app.inject({
        method: "GET",
        url: `/api/tasks/${task}/events`,
        headers: other.auth,
      });
      expect(
        (seen.json<Json>().events as Json[]).find((e) => e.event_type === "task.released"),
      ).toMatchObject({
        data: { attempt: 1 },
        withheld: ["data.reason"],
      });

      // Back in its auction: nothing to hand back, by the holder (a retry) or anyone.
      const again = await release(holder.auth);
      expect(again.statusCode).toBe(409);
      expect(again.json<Json>().error.code).toBe("TASK_NOT_ACTIVE");
      // The other agent wins the new round; its task is not the holder's to hand back.
      expect((await t.bid(other, task, 9)).statusCode).toBe(201);
      t.clock.advance(t.coordinator.rules.defaultAuctionMs);
      await t.tick();
      expect(await t.coordinator.getTask(task)).toMatchObject({
        status: "assigned",
        assigned_agent: other.id,
      });
      expect((await release(holder.auth)).json<Json>().error.code).toBe("NOT_ASSIGNED_AGENT");
      await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/complete`,
        headers: other.auth,
        payload: {},
      });
      const ended = await release(other.auth);
      expect(ended.statusCode).toBe(409);
      expect(ended.json<Json>().error.code).toBe("TASK_FINAL");

      const spec = await t.app.inject({ method: "GET", url: "/openapi.json" });
      const route = (spec.json<Json>().paths as Json)["/api/tasks/{id}/release"] as Json;
      expect(Object.keys(route.post.responses as Json)).toEqual(
        expect.arrayContaining(["200", "403", "409"]),
      );
    });

    it("runs open on loopback without a key: operator actions need no credentials, agents still do", async () => {
      const t = await build({ apiKey: undefined });
      const registered = await t.app.inject({
        method: "POST",
        url: "/api/agents",
        payload: { name: "open" },
      });
      expect(registered.statusCode).toBe(201);
      const task = await t.app.inject({ method: "POST", url: "/api/tasks", payload: { description: "x" } });
      expect(task.statusCode).toBe(201);
      const id = task.json<Json>().task.id as string;
      expect(
        (await t.app.inject({ method: "POST", url: `/api/tasks/${id}/bids`, payload: { bid_sats: 1 } }))
          .statusCode,
      ).toBe(401);
      expect((await t.app.inject({ method: "GET", url: "/api/agents" })).statusCode).toBe(200);
    });
  });

  describe("events", () => {
    async function withEvents() {
      const t = await build();
      await t.eventLog.logEvents([
        {
          event_type: "task.created",
          source: "coordinator",
          task_id: "t1",
          data: { description: "Parse =CMD|' /C calc'!A0" },
        },
        { event_type: "bid.submitted", source: "a1", task_id: "t1", agent_id: "a1", data: { bid_sats: 5 } },
        { event_type: "bid.submitted", source: "a2", task_id: "t1", agent_id: "a2", data: { bid_sats: 7 } },
        {
          event_type: "task.assigned",
          source: "coordinator",
          task_id: "t1",
          agent_id: "a1",
          data: { note: 'say "hi", ok' },
        },
      ]);
      return t;
    }

    it("filters by every parameter, types comma-separated or repeated, and pages by cursor", async () => {
      const t = await withEvents();
      const get = async (query: string) =>
        (
          await t.app.inject({ method: "GET", url: `/api/events?${query}`, headers: t.operator })
        ).json<Json>();
      expect((await get("type=bid.submitted,task.assigned")).events.map((e: Json) => e.seq)).toEqual([
        2, 3, 4,
      ]);
      expect((await get("type=task.created&type=task.assigned")).events.map((e: Json) => e.seq)).toEqual([
        1, 4,
      ]);
      expect((await get("agent_id=a1")).events.map((e: Json) => e.seq)).toEqual([2, 4]);
      expect((await get("source=coordinator&q=CMD")).events.map((e: Json) => e.seq)).toEqual([1]);
      const page = await get("limit=3");
      expect(page.next_cursor).toBe(3);
      expect((await get(`after_seq=${page.next_cursor as number}`)).events.map((e: Json) => e.seq)).toEqual([
        4,
      ]);
      expect((await get("order=desc&limit=1")).events[0].data).toEqual({ note: 'say "hi", ok' });
    });

    it("refuses bad filters with a 400 naming them", async () => {
      const t = await withEvents();
      for (const [query, field] of [
        ["since=yesterday", "since"],
        ["limit=5000", "querystring.limit"],
        ["type=NOT A TYPE", "types[0]"],
        ["after_seq=-1", "querystring.after_seq"],
        // Ajv turns these into Infinity and then lets them past `maximum` (found by the property test).
        ["limit=1e309", "querystring.limit"],
        ["before_seq=Infinity", "querystring.before_seq"],
      ] as const) {
        const response = await t.app.inject({
          method: "GET",
          url: `/api/events?${query}`,
          headers: t.operator,
        });
        expect(response.statusCode, query).toBe(400);
        expect(response.json<Json>().error.details.field).toBe(field);
      }
      const tasks = await t.app.inject({ method: "GET", url: "/api/tasks?limit=1e309", headers: t.operator });
      expect(tasks.statusCode).toBe(400);
      expect(tasks.json<Json>().error.message).toBe("querystring.limit: must be a finite number");
    });

    it("takes event_type, the Python module's name, for type, and refuses both at once, naming event_type", async () => {
      const t = await withEvents();
      const get = (query: string) =>
        t.app.inject({ method: "GET", url: `/api/events?${query}`, headers: t.operator });
      const seqsOf = async (query: string) =>
        (await get(query)).json<Json>().events.map((e: Json) => e.seq) as number[];
      expect(await seqsOf("event_type=task.created")).toEqual([1]);
      expect(await seqsOf("event_type=bid.submitted,task.assigned")).toEqual([2, 3, 4]);
      expect(await seqsOf("event_type=task.created&event_type=task.assigned")).toEqual([1, 4]);
      const both = await get("type=task.created&event_type=task.assigned");
      expect(both.statusCode).toBe(400);
      expect(both.json<Json>().error).toMatchObject({
        code: "INVALID_FILTER",
        details: { field: "querystring.event_type" },
      });
      const exported = await t.app.inject({
        method: "GET",
        url: "/api/events/export?event_type=bid.submitted",
        headers: t.operator,
      });
      expect(
        exported.body
          .trim()
          .split("\n")
          .map((line) => (JSON.parse(line) as Json).seq),
      ).toEqual([2, 3]);
    });

    it("refuses a query parameter a read does not take with INVALID_FILTER naming it, instead of ignoring it", async () => {
      const t = await withEvents();
      const agent = await t.agent("reader");
      const task = await t.task();
      for (const [url, key] of [
        ["/api/events?event_typ=task.created", "event_typ"],
        ["/api/events?types=task.created", "types"],
        ["/api/events?offset=2", "offset"],
        ["/api/events/export?event=task.created", "event"],
        ["/api/events/summary?minutes=5&type=task.created", "type"],
        ["/api/tasks?state=bidding", "state"],
        [`/api/tasks/${task}/events?type=bid.submitted`, "type"],
        [`/api/tasks/${task}?include=bids`, "include"],
        ["/api/agents?state=idle", "state"],
        [`/api/agents/${agent.id}?stats=1`, "stats"],
      ] as const) {
        const response = await t.app.inject({ method: "GET", url, headers: t.operator });
        expect(response.statusCode, url).toBe(400);
        const { error } = response.json<Json>();
        expect(error.code, url).toBe("INVALID_FILTER");
        expect(error.details.field, url).toBe(`querystring.${key}`);
        expect(error.message, url).toContain(key);
      }
      const listed = await t.app.inject({ method: "GET", url: "/api/events?typ=x", headers: t.operator });
      expect(listed.json<Json>().error.message).toMatch(/takes type, event_type, source, .*order/);
    });

    it("summarizes by type", async () => {
      const t = await withEvents();
      const summary = (
        await t.app.inject({ method: "GET", url: "/api/events/summary?minutes=5", headers: t.operator })
      ).json<Json>();
      expect(summary).toEqual({
        minutes: 5,
        total: 4,
        counts: { "task.created": 1, "bid.submitted": 2, "task.assigned": 1 },
      });
    });

    it("exports the filtered history as NDJSON and as CSV a spreadsheet cannot execute", async () => {
      const t = await withEvents();
      const ndjson = await t.app.inject({
        method: "GET",
        url: "/api/events/export?task_id=t1",
        headers: t.operator,
      });
      expect(ndjson.headers["content-type"]).toContain("application/x-ndjson");
      const lines = ndjson.body
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as Json);
      expect(lines.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
      const csv = await t.app.inject({
        method: "GET",
        url: "/api/events/export?format=csv&type=task.created,task.assigned",
        headers: t.operator,
      });
      expect(csv.headers["content-type"]).toContain("text/csv");
      const rows = csv.body.trim().split("\r\n");
      expect(rows[0]).toBe("seq,id,event_type,source,task_id,agent_id,timestamp,data");
      expect(rows).toHaveLength(3);
      expect(rows[1]).toContain(`"{""description"":""Parse =CMD|' /C calc'!A0""}"`);
      expect(rows[2]).toContain(`"{""note"":""say \\""hi\\"", ok""}"`);
      const bad = await t.app.inject({
        method: "GET",
        url: "/api/events/export?since=never",
        headers: t.operator,
      });
      expect(bad.statusCode).toBe(400);
    });

    it("streams an export of many pages in order", async () => {
      const t = await build();
      await t.eventLog.logEvents(
        Array.from({ length: 2500 }, (_, i) => ({ event_type: "tool.called", source: "s", data: { i } })),
      );
      const response = await t.app.inject({ method: "GET", url: "/api/events/export", headers: t.operator });
      const seqs = response.body
        .trim()
        .split("\n")
        .map((line) => (JSON.parse(line) as Json).seq as number);
      expect(seqs).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));
    });
  });

  describe("the HTTP edges", () => {
    it("answers unknown routes, bad JSON, wrong media types and huge bodies in the one error shape", async () => {
      const t = await build({ bodyLimit: 1024 });
      const json = { ...t.operator, "content-type": "application/json" };
      const cases = [
        ["GET", "/api/nothing-here", t.operator, undefined, 404, "NOT_FOUND"],
        ["POST", "/api/tasks", json, "{oops", 400, "INVALID_BODY"],
        [
          "POST",
          "/api/tasks",
          { ...t.operator, "content-type": "application/xml" },
          "<hi/>",
          415,
          "UNSUPPORTED_MEDIA_TYPE",
        ],
        [
          "POST",
          "/api/tasks",
          json,
          JSON.stringify({ description: "x".repeat(5000) }),
          413,
          "BODY_TOO_LARGE",
        ],
      ] as const;
      for (const [method, url, headers, payload, status, code] of cases) {
        const response = await t.app.inject({
          method,
          url,
          headers,
          ...(payload === undefined ? {} : { payload }),
        });
        expect(response.statusCode).toBe(status);
        expect(response.json<Json>()).toEqual({ error: { code, message: expect.any(String) as string } });
      }
      expect(await t.eventLog.latestSeq()).toBe(0);
    });

    it("answers 415 UNSUPPORTED_MEDIA_TYPE to any body that is not JSON, text/plain included, writing nothing", async () => {
      const t = await build();
      const taskId = await t.task();
      const before = await t.eventLog.latestSeq();
      const cases = [
        ["/api/tasks", "text/plain", JSON.stringify({ description: "smuggled as text" })],
        ["/api/tasks", "text/plain; charset=utf-8", JSON.stringify({ description: "smuggled as text" })],
        ["/api/tasks", "application/x-www-form-urlencoded", "description=smuggled+as+a+form"],
        [`/api/tasks/${taskId}/cancel`, "text/plain", ""],
        [`/api/tasks/${taskId}/cancel`, "text/plain;charset=UTF-8", "{}"],
      ] as const;
      for (const [url, contentType, payload] of cases) {
        const response = await t.app.inject({
          method: "POST",
          url,
          headers: { ...t.operator, "content-type": contentType },
          payload,
        });
        expect(response.statusCode, `${contentType} to ${url}`).toBe(415);
        expect(response.json<Json>().error).toEqual({
          code: "UNSUPPORTED_MEDIA_TYPE",
          message: expect.stringContaining(contentType.split(";")[0] ?? "") as string,
        });
      }
      expect(await t.eventLog.latestSeq()).toBe(before);
      expect((await t.coordinator.getTask(taskId))?.status).toBe("bidding");
    });

    it("limits the rate per credential", async () => {
      const t = await build({ rateLimitPerMinute: 3 });
      const statuses: number[] = [];
      for (let i = 0; i < 5; i += 1)
        statuses.push(
          (await t.app.inject({ method: "GET", url: "/api/agents", headers: t.operator })).statusCode,
        );
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      const limited = await t.app.inject({ method: "GET", url: "/api/agents", headers: t.operator });
      expect(limited.json<Json>().error.code).toBe("RATE_LIMITED");
      // Another credential has its own budget.
      const a = await t.app.inject({ method: "GET", url: "/api/agents" });
      expect(a.statusCode).toBe(401);
    });

    it("limits expensive reads per credential on their own budget, apart from plain reads and other agents", async () => {
      const t = await build({ expensiveRateLimitPerMinute: 3 });
      const a = await t.agent("a");
      const b = await t.agent("b");
      const get = (url: string, headers: Record<string, string>) =>
        t.app.inject({ method: "GET", url, headers });
      const searches: number[] = [];
      for (let i = 0; i < 4; i += 1) searches.push((await get("/api/events/export", a.auth)).statusCode);
      expect(searches).toEqual([200, 200, 200, 429]);
      const refused = await get("/api/events/export", a.auth);
      expect(refused.statusCode).toBe(429);
      expect(refused.headers["retry-after"]).toMatch(/^\d+$/);
      expect(refused.json<Json>().error).toMatchObject({
        code: "RATE_LIMITED",
        message: expect.stringContaining("expensive-read limit of 3 per minute") as string,
        details: { limit: "expensive_reads", retry_after: expect.any(String) as string },
      });
      // The same token's ordinary reads are not expensive; another agent has its own budget.
      for (let i = 0; i < 5; i += 1) expect((await get("/api/events?limit=5", a.auth)).statusCode).toBe(200);
      for (let i = 0; i < 3; i += 1) expect((await get("/api/events/export", b.auth)).statusCode).toBe(200);
    });

    it("counts exports, summaries beyond an hour and the dashboard's searches and exports as expensive, and a page of a timeline not", async () => {
      const t = await build({ expensiveRateLimitPerMinute: 1 });
      const task = await t.task();
      const twice = async (url: string, headers: Record<string, string>) => {
        const statuses: number[] = [];
        for (let i = 0; i < 2; i += 1)
          statuses.push((await t.app.inject({ method: "GET", url, headers })).statusCode);
        return statuses;
      };
      expect(await twice("/api/events/export", (await t.agent("export")).auth)).toEqual([200, 429]);
      // A timeline comes a page at a time now, each as cheap as a page of /api/events.
      expect(await twice(`/api/tasks/${task}/events`, (await t.agent("timeline")).auth)).toEqual([200, 200]);
      const summaries = (await t.agent("summary")).auth;
      expect(await twice("/api/events/summary?minutes=60", summaries)).toEqual([200, 200]);
      expect(await twice("/api/events/summary?minutes=61", summaries)).toEqual([200, 429]);
      // The dashboard's visitors (open on loopback here) spend their IP's budget.
      const open = await build({ apiKey: undefined, expensiveRateLimitPerMinute: 1 });
      const page = async (url: string) => (await open.app.inject({ method: "GET", url })).statusCode;
      expect([await page("/events?q=report"), await page("/events"), await page("/events?q=report")]).toEqual(
        [200, 200, 429],
      );
      expect(await page("/events/export?format=csv")).toBe(429);
    });

    it("takes the client's address from X-Forwarded-For only from a trusted proxy", async () => {
      // Requests without credentials are rate limited per address (and refused, 401), so two
      // clients behind the proxy get a budget each only when the proxy's word is taken.
      const statuses = async (
        app: Awaited<ReturnType<typeof buildTestApp>>["app"],
        remoteAddress: string,
      ) => {
        const seen: number[] = [];
        for (const client of ["198.51.100.1", "198.51.100.2"]) {
          const response = await app.inject({
            url: "/api/agents",
            headers: { "x-forwarded-for": client },
            remoteAddress,
          });
          seen.push(response.statusCode);
        }
        return seen;
      };
      const behindProxy = await build({ rateLimitPerMinute: 1, trustProxy: ["10.0.0.0/8"] });
      expect(await statuses(behindProxy.app, "10.1.2.3")).toEqual([401, 401]);
      expect(await statuses(behindProxy.app, "203.0.113.7")).toEqual([401, 429]);
      const noProxy = await build({ rateLimitPerMinute: 1 });
      expect(await statuses(noProxy.app, "10.1.2.3")).toEqual([401, 429]);
    });

    it("sets security headers and serves the OpenAPI document and its browsable UI", async () => {
      const t = await build();
      const spec = await t.app.inject({ method: "GET", url: "/openapi.json" });
      expect(spec.statusCode).toBe(200);
      const paths = Object.keys(spec.json<Json>().paths as Json);
      expect(paths).toEqual(
        expect.arrayContaining([
          "/api/agents",
          "/api/tasks/{id}/bids",
          "/api/events/export",
          "/healthz",
          "/api/tasks/{id}/assign",
          "/api/tasks/{id}/retry",
          "/api/tasks/{id}/dependencies",
          "/api/schedules",
          "/api/schedules/{id}/pause",
          "/api/status",
        ]),
      );
      // Every event type the product writes is named in the document.
      for (const type of ["task.award_expired", "task.timed_out", "task.retry_scheduled", "schedule.fired"])
        expect(spec.body).toContain(type);
      expect(spec.headers["x-content-type-options"]).toBe("nosniff");
      expect(spec.headers["content-security-policy"]).toContain("default-src 'self'");
      const docs = await t.app.inject({ method: "GET", url: "/docs/" });
      expect(docs.statusCode).toBe(200);
      expect(docs.body).toContain("swagger");
    });

    it("exports Prometheus metrics", async () => {
      const t = await build();
      await t.agent("a");
      await t.task();
      const metrics = await t.app.inject({ method: "GET", url: "/metrics" });
      expect(metrics.body).toMatch(/swarm_events_written_total\{type="agent.joined"\} 1/);
      expect(metrics.body).toMatch(/swarm_tasks\{status="bidding"\} 1/);
      expect(metrics.body).toContain("swarm_http_request_duration_seconds_bucket");
      expect(metrics.body).toContain("swarm_open_websockets");
    });
  });

  describe("bodies", () => {
    it("takes an empty JSON body as no fields, and refuses prototype poisoning", async () => {
      const t = await build();
      const task = await t.task();
      const empty = await t.app.inject({
        method: "POST",
        url: `/api/tasks/${task}/cancel`,
        headers: { ...t.operator, "content-type": "application/json" },
        payload: "",
      });
      expect(empty.statusCode).toBe(200);
      const poisoned = await t.app.inject({
        method: "POST",
        url: "/api/tasks",
        headers: { ...t.operator, "content-type": "application/json" },
        payload: '{"description":"x","__proto__":{"admin":true}}',
      });
      expect(poisoned.statusCode).toBe(400);
      expect(poisoned.json().error.code).toBe("INVALID_BODY");
    });
  });
});
