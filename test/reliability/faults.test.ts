/**
 * Faults injected into a running product: the disk fills, the database turns read-only, an
 * agent dies mid-task, the server's own event loop stalls, an agent floods heartbeats, a client opens thousands of websockets, a
 * dashboard page stops reading. Each gets a clear error or a bounded reaction, the process
 * stays up, nothing acknowledged is lost, and service resumes when the fault clears.
 * (A stream consumer that stops reading: test/web/stream.test.ts.)
 */
import { execFileSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { BENCH_KEY, readMetrics, startProduct } from "../../bench/harness.js";
import { eventually, startStack, type Stack } from "../helpers/stack.js";
import { tempDbPath } from "../helpers/temp-dir.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type Product = Awaited<ReturnType<typeof startProduct>>;

async function product(env: Record<string, string> = {}): Promise<Product> {
  const running = await startProduct("faults", env);
  cleanups.push(() => running.close());
  return running;
}

/** A request; `token` "" sends none (the in-process stacks run open, without a key). */
async function call(url: string, method: string, path: string, token = BENCH_KEY, body?: unknown) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(token === "" ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  // Bodies are read field by field as each route documents them, as in the other API tests.
  const parsed: any = text === "" ? {} : JSON.parse(text); // eslint-disable-line @typescript-eslint/no-explicit-any
  return { status: response.status, body: parsed };
}

/** A figure from the product's own /metrics, summed over its labels. */
async function metric(url: string, name: string): Promise<number> {
  const value = (await readMetrics(url))(name);
  if (Number.isNaN(value)) throw new Error(`no metric ${name}`);
  return value;
}
const rssMiB = async (url: string) => (await metric(url, "process_resident_memory_bytes")) / 2 ** 20;

describe("faults", () => {
  it("disk full mid-run: writes refused with 503 naming the cause, reads and health say so, nothing acknowledged lost, then resumes", async () => {
    const server = await product();
    const post = (n: number) =>
      call(server.url, "POST", "/api/tasks", BENCH_KEY, { description: `task ${n} ${"x".repeat(8000)}` });
    const acknowledged: string[] = [];
    for (let n = 0; n < 20; n += 1) acknowledged.push((await post(n)).body.task.id);
    // The file system refuses to let any of the server's files grow past 1 MB from now on.
    execFileSync("prlimit", ["--pid", String(server.child.pid), "--fsize=1000000:unlimited"]);
    let refused: Awaited<ReturnType<typeof post>> | undefined;
    for (let n = 20; n < 400 && refused === undefined; n += 1) {
      const answer = await post(n);
      if (answer.status === 201) acknowledged.push(answer.body.task.id);
      else refused = answer;
    }
    expect(refused?.status).toBe(503);
    expect(refused?.body.error).toMatchObject({ code: "STORAGE_UNAVAILABLE" });
    expect(refused?.body.error.message).toContain("nothing from this write was kept");
    const health = await call(server.url, "GET", "/healthz");
    expect(health.status).toBe(503);
    expect(health.body).toMatchObject({ status: "degraded", storage: "sqlite" });
    expect(health.body.storage_error).toMatch(/writes failing since .* \(SQLITE_/);
    expect((await call(server.url, "GET", "/api/tasks?limit=1")).status).toBe(200);

    execFileSync("prlimit", ["--pid", String(server.child.pid), "--fsize=unlimited:unlimited"]);
    const resumed = await post(1000);
    expect(resumed.status).toBe(201);
    expect((await call(server.url, "GET", "/healthz")).body.status).toBe("ok");
    expect(server.child.exitCode).toBeNull();
    const stored = new Set<string>();
    for (let cursor: string | null = ""; cursor !== null;) {
      const page = await call(
        server.url,
        "GET",
        `/api/tasks?limit=200${cursor === "" ? "" : `&cursor=${cursor}`}`,
      );
      for (const task of page.body.tasks) stored.add(task.id);
      cursor = page.body.next_cursor;
    }
    for (const id of acknowledged) expect(stored.has(id), id).toBe(true);
    expect(stored.size).toBe(acknowledged.length + 1); // the refused post left nothing behind
  });

  it("read-only database: writes refused with 503, reads go on, and writes resume when it is writable again", async () => {
    const stack = await startStack(tempDbPath());
    cleanups.push(() => stack.stop());
    const before = stack.eventLog.latestSeq();
    // SQLite's own switch: every write now fails as on a read-only file (SQLITE_READONLY).
    stack.eventLog.db.pragma("query_only = ON");
    const refused = await call(stack.base, "POST", "/api/tasks", "", { description: "x" });
    expect(refused.status).toBe(503);
    expect(refused.body.error.details).toMatchObject({ sqlite_code: "SQLITE_READONLY" });
    expect((await call(stack.base, "GET", "/api/events?limit=5", "")).status).toBe(200);
    expect((await call(stack.base, "GET", "/healthz", "")).body.storage_error).toContain("SQLITE_READONLY");
    expect(stack.eventLog.latestSeq()).toBe(before);
    stack.eventLog.db.pragma("query_only = OFF");
    expect((await call(stack.base, "POST", "/api/tasks", "", { description: "x" })).status).toBe(201);
  });

  it("an agent killed mid-task: after its heartbeat timeout the task goes to another agent, which completes it", async () => {
    const stack: Stack = await startStack(tempDbPath(), 0, { rules: { heartbeatTimeoutMs: 1500 } });
    cleanups.push(() => stack.stop());
    const launcher = fileURLToPath(new URL("../../bin/swarm-agent.js", import.meta.url));
    const agent = (name: string, bid: number, workMs: number) => {
      const child = spawn(
        process.execPath,
        [
          launcher,
          ...["--server", stack.base, "--name", name, "--capabilities", "code", "--bid-base", String(bid)],
          ...["--work-ms", String(workMs), "--heartbeat-ms", "300", "--log-level", "silent"],
        ],
        { stdio: "ignore" },
      );
      cleanups.push(() => void child.kill("SIGKILL"));
      return child;
    };
    const doomed = agent("doomed", 10, 600_000); // cheapest: wins, then works for ten minutes
    agent("survivor", 500, 50);
    await eventually(
      () => stack.coordinator.listAgents().filter((a) => a.status !== "offline").length,
      (online) => online === 2,
      20_000,
    );
    const { task } = await stack.coordinator.submit({
      type: "PostTask",
      description: "write the code",
      required_capabilities: ["code"],
      auction_ms: 1000,
    });
    const doomedId = stack.coordinator.listAgents().find((a) => a.name === "doomed")!.id;
    await eventually(
      () => stack.coordinator.getTask(task!.id),
      (t) => t?.status === "running" && t.assigned_agent === doomedId,
    );
    doomed.kill("SIGKILL");
    const done = await eventually(
      () => stack.coordinator.getTask(task!.id),
      (t) => t?.status === "completed",
      20_000,
    );
    expect(done?.assigned_agent).not.toBe(doomedId);
    expect(done?.attempt).toBe(2);
    const timeline = stack.eventLog.getTaskEvents(task!.id).map((e) => e.event_type);
    expect(timeline.filter((type) => type === "task.bidding")).toHaveLength(2);
    expect(stack.coordinator.getAgent(doomedId)?.status).toBe("offline");
  });

  it("the server's own stall longer than the heartbeat timeout: an agent heartbeating all along stays online and keeps its running task", async () => {
    const timeoutMs = 1500;
    const stack: Stack = await startStack(tempDbPath(), 0, { rules: { heartbeatTimeoutMs: timeoutMs } });
    cleanups.push(() => stack.stop());
    const launcher = fileURLToPath(new URL("../../bin/swarm-agent.js", import.meta.url));
    const child = spawn(
      process.execPath,
      [
        launcher,
        ...["--server", stack.base, "--name", "honest", "--capabilities", "code", "--bid-base", "10"],
        ...["--work-ms", "600000", "--heartbeat-ms", "200", "--log-level", "silent"],
      ],
      { stdio: "ignore" },
    );
    cleanups.push(() => void child.kill("SIGKILL"));
    await eventually(
      () => stack.coordinator.listAgents().filter((a) => a.status !== "offline").length,
      (online) => online === 1,
      20_000,
    );
    const agentId = stack.coordinator.listAgents()[0]!.id;
    const { task } = await stack.coordinator.submit({
      type: "PostTask",
      description: "write the code",
      required_capabilities: ["code"],
      auction_ms: 1000,
    });
    await eventually(
      () => stack.coordinator.getTask(task!.id),
      (t) => t?.status === "running" && t.assigned_agent === agentId,
    );
    // The event loop is held (as a long synchronous scan would hold it) for well over the
    // timeout, while the agent's heartbeats keep arriving and wait in the socket buffers.
    const stalledUntil = Date.now() + 3 * timeoutMs;
    while (Date.now() < stalledUntil) {
      // busy: nothing else in this process runs meanwhile
    }
    // Let the server catch up: heartbeats sent during the stall, then some from after it.
    await eventually(
      () => Date.parse(stack.coordinator.getAgent(agentId)!.last_seen),
      (lastSeen) => lastSeen > stalledUntil + 500,
    );
    expect(stack.coordinator.getAgent(agentId)?.status).not.toBe("offline");
    expect(stack.coordinator.getTask(task!.id)).toMatchObject({
      status: "running",
      assigned_agent: agentId,
      attempt: 1,
    });
    const changes = stack.eventLog.listEvents({ types: "agent.status_changed", agent_id: agentId }).events;
    expect(changes.map((e) => e.data.to)).not.toContain("offline");
  });

  it("an agent flooding heartbeats is rate limited on its own: 429s, no events, others unaffected, memory flat", async () => {
    const server = await product({ SWARM_RATE_LIMIT: "600" });
    const register = (name: string) => call(server.url, "POST", "/api/agents", BENCH_KEY, { name });
    const flooder = (await register("flooder")).body;
    const calm = (await register("calm")).body;
    const eventsBefore = (await call(server.url, "GET", "/healthz")).body.latest_seq;
    const rssBefore = await rssMiB(server.url);
    const statuses = new Map<number, number>();
    let retryAfter: unknown;
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        for (let i = 0; i < 50; i += 1) {
          const answer = await call(
            server.url,
            "POST",
            `/api/agents/${flooder.agent.id}/heartbeat`,
            flooder.token,
          );
          statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
          if (answer.status === 429) retryAfter = answer.body.error;
        }
      }),
    );
    expect(statuses.get(200)).toBe(600);
    expect(statuses.get(429)).toBe(2000 - 600);
    expect(retryAfter).toMatchObject({ code: "RATE_LIMITED", details: { retry_after: expect.any(String) } });
    expect(
      (await call(server.url, "POST", `/api/agents/${calm.agent.id}/heartbeat`, calm.token)).status,
    ).toBe(200);
    expect((await call(server.url, "GET", "/healthz")).body.latest_seq).toBe(eventsBefore);
    expect(await rssMiB(server.url)).toBeLessThan(rssBefore + 64);
  });

  it("thousands of websockets: those over the limit are closed with 1013, the rest and the API keep working, memory bounded", async () => {
    // One credential opens them all; its own cap is lifted so that the server's is what they meet.
    const server = await product({
      SWARM_MAX_SOCKETS: "1000",
      SWARM_MAX_SOCKETS_PER_CLIENT: "1500",
      SWARM_DASHBOARD_PUBLIC: "true",
    });
    const rssBefore = await rssMiB(server.url);
    const base = server.url.replace("http", "ws");
    const refused: { code: number; reason: string }[] = [];
    const sockets = Array.from({ length: 1500 }, (_, i) => {
      const socket = new WebSocket(
        i % 2 === 0 ? `${base}/api/stream?token=${BENCH_KEY}` : `${base}/live?view=overview`,
        { headers: { authorization: `Bearer ${BENCH_KEY}` } },
      );
      socket.on("error", () => {});
      socket.on("close", (code, reason) => refused.push({ code, reason: reason.toString() }));
      return socket;
    });
    cleanups.push(() => sockets.forEach((socket) => socket.terminate()));
    await eventually(
      () => sockets.filter((s) => s.readyState === WebSocket.OPEN).length + refused.length,
      (settled) => settled === 1500 && refused.length === 500,
      30_000,
    );
    expect(refused.every((r) => r.code === 1013 && r.reason.includes("limit of 1000 websockets"))).toBe(true);
    expect(await metric(server.url, "swarm_refused_websockets_total")).toBe(500);
    // The API still answers, and a socket that was let in still gets events.
    const listener = sockets.find((s, i) => i % 2 === 0 && s.readyState === WebSocket.OPEN)!;
    const heard = new Promise((resolve) => listener.once("message", resolve));
    expect(
      (await call(server.url, "POST", "/api/tasks", BENCH_KEY, { description: "still here" })).status,
    ).toBe(201);
    await heard;
    expect(await rssMiB(server.url)).toBeLessThan(rssBefore + 200);
    for (const socket of sockets) socket.terminate();
    await eventually(
      () => metric(server.url, "swarm_open_websockets"),
      (open) => open === 0,
    );
  });

  it("a dashboard page that stops reading is dropped with 1013 while the server keeps going", async () => {
    const stack = await startStack(tempDbPath(), 0, { app: { live: { maxBufferedBytes: 256 * 1024 } } });
    cleanups.push(() => stack.stop());
    const page = new WebSocket(`${stack.base.replace("http", "ws")}/live?view=events`);
    await new Promise((resolve) => page.once("message", resolve));
    (page as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const closed = new Promise<number>((resolve) => page.on("close", (code) => resolve(code)));
    const open = async () =>
      (await stack.app.metrics.openWebsockets.get()).values.find((v) => v.labels.kind === "dashboard")?.value;
    // Rows of about a kilobyte each, until the kernel's buffers and then the server's fill up.
    const long = (prefix: string) => `${prefix}-${"z".repeat(190)}`;
    for (let batch = 0; batch < 200 && (await open()) !== 0; batch += 1) {
      await stack.eventLog.logEvents(
        Array.from({ length: 200 }, (_, i) => ({
          event_type: "system.info",
          source: long(`s${i}`),
          task_id: long(`t${i}`),
          agent_id: long(`a${i}`),
        })),
      );
      await new Promise((resolve) => setTimeout(resolve, 60)); // let the batch go out
    }
    expect(await open()).toBe(0);
    (page as unknown as { _socket: { resume(): void } })._socket.resume();
    expect(await closed).toBe(1013);
  });
});
