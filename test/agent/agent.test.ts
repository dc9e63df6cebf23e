import { spawn } from "node:child_process";
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { delay, SwarmAgent, type SwarmAgentOptions } from "../../src/agent/agent.js";
import { execHandler, parseCommand, UsageError } from "../../src/agent/cli.js";
import { SwarmClient } from "../../src/agent/client.js";
import { startDemoSwarm } from "../../src/agent/demo-swarm.js";
import { budgetHour } from "../../src/coordinator/limits.js";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import { shortId } from "../../src/ids.js";
import { adaptiveStrategy, matchStrategy } from "../../src/agent/strategies.js";
import { silentLogger } from "../helpers/event-log.js";
import { ENGINES } from "../helpers/engines.js";
import {
  eventually,
  startStack,
  startStackOn,
  type PortStack,
  type Stack,
  type StackEngine,
} from "../helpers/stack.js";
import { tempDbPath, tempDir } from "../helpers/temp-dir.js";
import { startServer } from "../helpers/server-process.js";
import { freePort } from "../../bench/harness.js";

const KEY = "operator-key-for-agent-tests-0123";
const running: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  for (const thing of running.splice(0).reverse()) await thing.stop().catch(() => undefined);
});

async function stack(path = tempDbPath(), port = 0, rules: Partial<CoordinatorRules> = {}): Promise<Stack> {
  const started = await startStack(path, port, { apiKey: KEY, rules: { defaultAuctionMs: 400, ...rules } });
  running.push(started);
  return started;
}

/** A stack on `engine` (on the storage `where` names, to restart on it), as `stack` makes. */
async function stackOn(engine: StackEngine, where?: string, port = 0) {
  const started = await startStackOn(engine, port, { apiKey: KEY, rules: { defaultAuctionMs: 400 } }, where);
  running.push(started);
  return started;
}

function agent(server: PortStack, options: Partial<SwarmAgentOptions> & Pick<SwarmAgentOptions, "handler">) {
  const created = new SwarmAgent({
    server: server.base,
    name: "worker",
    apiKey: KEY,
    heartbeatMs: 200,
    reconnect: { minMs: 50, maxMs: 500 },
    stopGraceMs: 500,
    logger: silentLogger,
    ...options,
  });
  running.push(created);
  return created;
}

const operator = (server: PortStack) => new SwarmClient(server.base, { token: KEY });

async function postTask(server: PortStack, body: Record<string, unknown>): Promise<string> {
  const { task } = await operator(server).request<{ task: { id: string } }>("POST", "/api/tasks", body);
  return task.id;
}

const taskStatus = async (server: PortStack, id: string) => (await server.coordinator.getTask(id))?.status;
const typesOf = async (server: PortStack, id: string) =>
  (await server.eventLog.getTaskEvents(id)).map((event) => event.event_type);

describe.each(ENGINES)("SwarmAgent against a real server on $name", ({ name: engine }) => {
  it("registers, bids, wins, runs, reports its tool calls and completes, with the events in order", async () => {
    const server = await stackOn(engine);
    const worker = agent(server, {
      capabilities: ["search"],
      handler: async ({ task, tool }) => {
        const hits = await tool("web.search", { q: task.description }, () => ["a", "b"]);
        return `found ${hits.length} for ${task.description}`;
      },
    });
    await worker.start();
    const taskId = await postTask(server, { description: "look it up", required_capabilities: ["search"] });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "completed",
    );
    expect(await typesOf(server, taskId)).toEqual([
      "task.created",
      "task.bidding",
      "bid.submitted",
      "auction.closed",
      "task.assigned",
      "task.started",
      "tool.called",
      "tool.completed",
      "task.completed",
    ]);
    expect(await server.coordinator.getTask(taskId)).toMatchObject({
      assigned_agent: worker.id,
      result: "found 2 for look it up",
    });
    // The agent counts the completion when the server's answer reaches it, just after the commit.
    await eventually(
      () => worker.stats.completed,
      (completed) => completed === 1,
    );
    expect(worker.stats).toMatchObject({ bids: 1, wins: 1, completed: 1 });
  });

  it("fails the task with the handler's error, and a failing tool call is reported as failed", async () => {
    const server = await stackOn(engine);
    const worker = agent(server, {
      handler: async ({ tool }) => {
        await tool("db.query", {}, () => {
          throw new Error("connection refused");
        });
      },
    });
    await worker.start();
    const taskId = await postTask(server, { description: "query" });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "failed",
    );
    expect((await server.coordinator.getTask(taskId))?.error).toBe("connection refused");
    expect(await typesOf(server, taskId)).toContain("tool.failed");
  });

  it("aborts the handler when the coordinator times its run out, and runs the retry it wins again", async () => {
    const server = await stackOn(engine);
    const reasons: string[] = [];
    let runs = 0;
    const worker = agent(server, {
      handler: async ({ signal }) => {
        runs += 1;
        if (runs === 1) {
          // Hangs until the coordinator's timeout aborts it.
          await new Promise<void>((resolve) =>
            signal.addEventListener("abort", () => resolve(), { once: true }),
          );
          reasons.push(String((signal.reason as Error).message));
          return "too late";
        }
        return "second time lucky";
      },
    });
    await worker.start();
    const taskId = await postTask(server, { description: "slow", timeout_ms: 500, max_attempts: 2 });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "completed",
    );
    expect(reasons).toEqual(["task timed out after 500 ms"]);
    expect(await server.coordinator.getTask(taskId)).toMatchObject({
      result: "second time lucky",
      attempt: 2,
      failures: 1,
    });
    expect(await typesOf(server, taskId)).toEqual(
      expect.arrayContaining(["task.timed_out", "task.bidding", "task.completed"]),
    );
    expect((await typesOf(server, taskId)).filter((type) => type === "task.started")).toHaveLength(2);
  });

  it("runs a task once its dependency has completed, handing the handler the dependency's result", async () => {
    const server = await stackOn(engine);
    const worker = agent(server, {
      handler: async ({ task, dependencies }) =>
        dependencies.length === 0
          ? `numbers for ${task.description}`
          : `summary of ${dependencies.map((d) => `${d.id}=${d.result ?? "?"}`).join(", ")}`,
    });
    const gather = await postTask(server, { description: "gather" });
    const summarize = await postTask(server, { description: "summarize", depends_on: [gather] });
    expect(await taskStatus(server, summarize)).toBe("waiting");
    await worker.start();
    await eventually(
      () => taskStatus(server, summarize),
      (status) => status === "completed",
    );
    expect((await server.coordinator.getTask(summarize))?.result).toBe(
      `summary of ${gather}=numbers for gather`,
    );
    // Another agent is not shown the dependency's result.
    const { token } = await operator(server).request<{ token: string }>("POST", "/api/agents", {
      name: "nosy",
    });
    const other = new SwarmClient(server.base, { token });
    const [seen] = await other.dependencies(summarize);
    expect(seen).toMatchObject({ id: gather, status: "completed", result: null });
  });

  it("lets strategies compete: the cheaper fit wins, an off-profile agent stays out", async () => {
    const server = await stackOn(engine);
    const handler = async () => "done";
    const cheap = agent(server, {
      name: "cheap",
      strategy: matchStrategy({ baseSats: 50, keywords: ["report"], jitter: 0 }),
      handler,
    });
    const dear = agent(server, {
      name: "dear",
      strategy: matchStrategy({ baseSats: 500, keywords: ["report"], jitter: 0 }),
      handler,
    });
    const shy = agent(server, {
      name: "shy",
      strategy: matchStrategy({ baseSats: 10, keywords: ["poetry"], offProfileMultiplier: null }),
      handler,
    });
    await Promise.all([cheap.start(), dear.start(), shy.start()]);
    const taskId = await postTask(server, { description: "summarise the quarterly report", auction_ms: 800 });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "completed",
    );
    const bids = await server.coordinator.getBids(taskId);
    expect(bids.map((bid) => [bid.agent_id, bid.bid_sats, bid.outcome]).sort()).toEqual(
      [
        [cheap.id, 50, "won"],
        [dear.id, 500, "lost"],
      ].sort(),
    );
    await eventually(
      () => dear.stats.losses,
      (losses) => losses === 1,
    );
  });

  it("keeps working through a server restart: the task in hand completes and new auctions are followed", async () => {
    let server = await stackOn(engine);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const worker = agent(server, {
      handler: async ({ task }) => {
        if (task.description === "long job") await gate;
        return `done: ${task.description}`;
      },
    });
    await worker.start();
    const longJob = await postTask(server, { description: "long job" });
    await eventually(
      () => taskStatus(server, longJob),
      (status) => status === "running",
    );

    const { port } = server;
    await server.stop();
    server = await stackOn(engine, server.where, port);
    release(); // the handler finishes while the agent's stream is still reconnecting
    await eventually(
      () => taskStatus(server, longJob),
      (status) => status === "completed",
      20_000,
    );
    const next = await postTask(server, { description: "after the restart" });
    await eventually(
      () => taskStatus(server, next),
      (status) => status === "completed",
      20_000,
    );
    expect((await server.coordinator.getAgent(worker.id ?? ""))?.status).not.toBe("offline");
  });

  it("considers every auction open when it joins, following the task list's cursor past its first page", async () => {
    const server = await stackOn(engine);
    // An agent that never bids keeps each auction open after the worker's bid (an auction closes
    // early only once every eligible agent has bid).
    await operator(server).register({ name: "bystander", capabilities: [], max_concurrent: 1 });
    const open = 230; // more than one page of 200
    for (let i = 0; i < open; i += 1)
      await postTask(server, { description: `auction ${i}`, auction_ms: 60_000 });
    const worker = agent(server, { handler: async () => "done" });
    await worker.start();
    const bidOn = async () =>
      new Set(
        (
          await server.eventLog.listEvents({ types: "bid.submitted", agent_id: worker.id, limit: 1000 })
        ).events.map((event) => event.task_id),
      ).size;
    await eventually(bidOn, (count) => count === open, 20_000);
  });

  it("reuses a saved identity instead of registering again, and leaves cleanly on stop", async () => {
    const server = await stackOn(engine);
    const identityFile = join(tempDir(), "agent.json");
    const first = agent(server, { identityFile, handler: async () => "ok" });
    await first.start();
    const again = new SwarmAgent({
      server: server.base,
      name: "worker",
      identityFile,
      handler: async () => "ok",
      logger: silentLogger,
    });
    await again.start();
    expect(again.id).toBe(first.id);
    expect((await server.coordinator.listAgents()).filter((a) => a.left_at === null)).toHaveLength(1);
    await again.stop();
    expect((await server.coordinator.getAgent(first.id ?? ""))?.left_at).not.toBeNull();
    expect((await server.eventLog.getAgentEvents(first.id ?? "")).map((e) => e.event_type)).toContain(
      "agent.left",
    );
  });
});

describe("the caps on what an agent may store", () => {
  /** A logger that keeps the warnings, to see what the agent told its operator. */
  function warnings() {
    const said: string[] = [];
    const logger = {
      ...silentLogger,
      info() {},
      debug() {},
      error() {},
      warn: (_: object, message?: string) => void said.push(message ?? ""),
    };
    return { said, logger };
  }

  it("drops tool reports past the per-task cap and still completes the task", async () => {
    const server = await stack(tempDbPath(), 0, { maxEventsPerTask: 8 });
    const { said, logger } = warnings();
    let calls = 0;
    const worker = agent(server, {
      logger,
      handler: async ({ tool }) => {
        for (let i = 0; i < 10; i += 1) await tool("step", { i }, () => (calls += 1));
        return "all ten steps done";
      },
    });
    await worker.start();
    const taskId = await postTask(server, { description: "many steps" });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "completed",
    );
    // Every step ran; the reports the cap refused were dropped, with one warning for the task.
    expect(calls).toBe(10);
    expect(server.coordinator.getTask(taskId)?.result).toBe("all ten steps done");
    const tools = (await typesOf(server, taskId)).filter((type) => type.startsWith("tool."));
    expect(tools.length).toBeGreaterThan(0);
    expect(tools.length).toBeLessThan(20);
    expect(said.filter((line) => line.includes("tool reports of task"))).toHaveLength(1);
  });

  it("pauses bidding for the server's Retry-After once its hourly byte budget is spent", async () => {
    const server = await stack(tempDbPath(), 0, { defaultAuctionMs: 300, maxAgentBytesPerHour: 6000 });
    // The budget counts per clock hour: start clear of an hour's end, so it stays spent.
    const toNextHour = 3_600_000 - (Date.now() % 3_600_000);
    if (toNextHour < 20_000) await delay(toNextHour + 100);
    const identity = await operator(server).register({ name: "spent", capabilities: [], max_concurrent: 1 });
    // The agent has stored its whole budget this hour (as its earlier reports would have).
    server.eventLog.db
      .prepare("INSERT INTO agent_report_usage (agent_id, hour, bytes) VALUES (?, ?, ?)")
      .run(identity.id, budgetHour(new Date()), 6000);
    const { said, logger } = warnings();
    const worker = agent(server, { logger, identity, handler: async () => "done" });
    await worker.start();
    const tasks: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      tasks.push(await postTask(server, { description: `task ${i}` }));
      await delay(400);
    }
    await eventually(
      () => Promise.all(tasks.map((id) => taskStatus(server, id))),
      (statuses) => statuses.every((status) => status === "failed"),
    );
    const paused = said.filter((line) => line.startsWith("bidding paused until"));
    expect(paused).toHaveLength(1);
    // Until the next clock hour, as the server's Retry-After said.
    const until = Date.parse(/until (\S+Z):/.exec(paused[0]!)?.[1] ?? "");
    const nextHour = Math.ceil(Date.now() / 3_600_000) * 3_600_000;
    expect(Math.abs(until - nextHour)).toBeLessThan(5_000);
    // One bid was refused; the auctions after it saw no bid from this agent at all.
    const metrics = await server.app.inject({ url: "/metrics", headers: { authorization: `Bearer ${KEY}` } });
    const refusedBids =
      /swarm_http_request_duration_seconds_count\{[^}]*route="\/api\/tasks\/:id\/bids"[^}]*status="429"[^}]*\} (\d+)/.exec(
        metrics.body,
      );
    expect(refusedBids?.[1]).toBe("1");
    expect(worker.stats.bids).toBe(0);
  });
});

describe("the identity file", () => {
  const modeOf = (file: string) => statSync(file).mode & 0o777;

  it("is tightened to mode 600 when an existing one open to others is reused", async () => {
    const server = await stack();
    const identityFile = join(tempDir(), "agent.json");
    const first = agent(server, { identityFile, handler: async () => "ok" });
    await first.start();
    chmodSync(identityFile, 0o644);
    const again = agent(server, { identityFile, handler: async () => "ok" });
    await again.start();
    expect(again.id).toBe(first.id);
    expect(modeOf(identityFile)).toBe(0o600);
  });

  it("is tightened to mode 600 before a new identity is written over an existing one", async () => {
    const server = await stack();
    const identityFile = join(tempDir(), "agent.json");
    writeFileSync(identityFile, "{}\n", { mode: 0o644 });
    chmodSync(identityFile, 0o644); // the umask may have taken bits off
    const joined = agent(server, { identityFile, handler: async () => "ok" });
    await joined.start();
    expect(modeOf(identityFile)).toBe(0o600);
    expect(JSON.parse(readFileSync(identityFile, "utf8"))).toMatchObject({ id: joined.id });
  });

  // A file whose mode even root cannot change: procfs refuses chmod on it.
  it.skipIf(!existsSync("/proc/self/status"))(
    "that cannot be made private is refused, naming it, and the command gives up at once",
    async () => {
      const server = await stack();
      const refused = agent(server, { identityFile: "/proc/self/status", handler: async () => "ok" });
      await expect(refused.start()).rejects.toThrow(
        /identity file \/proc\/self\/status is open to other users \(mode 0444\) and could not be made private/,
      );
      expect(server.coordinator.listAgents()).toEqual([]);

      const command = spawn(
        process.execPath,
        ["bin/swarm-agent.js", "--server", server.base, "--key", KEY, "--identity-file", "/proc/self/status"],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let stderr = "";
      command.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      running.push({ stop: async () => void command.kill("SIGKILL") });
      expect(await new Promise((resolve) => command.on("exit", resolve))).toBe(1);
      expect(stderr).toContain("could not be made private");
    },
  );
});

describe("stream robustness", () => {
  it("ignores malformed stream messages and keeps following auctions", async () => {
    const server = await stack();
    const worker = agent(server, { handler: async () => "ok" });
    await worker.start();
    // Messages a broken proxy or a future server might send, handed straight to the reader.
    const reader = worker as unknown as { onMessage(data: Buffer): void };
    for (const junk of [
      "not json",
      "null",
      "[]",
      '{"type":"event"}',
      '{"type":"event","event":{"seq":"7","event_type":"task.bidding"}}',
      '{"type":"event","event":{"seq":8,"event_type":"task.bidding","task_id":42}}',
      '{"type":"event","event":{"seq":9,"event_type":"task.assigned","task_id":"nope","agent_id":null,"data":"x"}}',
      '{"type":"surprise"}',
    ]) {
      expect(() => reader.onMessage(Buffer.from(junk))).not.toThrow();
    }
    const taskId = await postTask(server, { description: "still listening?" });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "completed",
    );
  });
});

describe("--exec", () => {
  it("runs the command with the task's text in the environment and completes with its stdout", async () => {
    const server = await stack();
    const worker = agent(server, {
      handler: execHandler('printf "got: %s" "$SWARM_TASK_DESCRIPTION"', 10_000),
    });
    await worker.start();
    const marker = join(tempDir(), "spliced");
    // Shell syntax in the description stays text: it is never part of the command line.
    const description = `it's "quoted"; $(touch ${marker}) \`touch ${marker}\``;
    const taskId = await postTask(server, { description });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "completed",
    );
    expect(server.coordinator.getTask(taskId)?.result).toBe(`got: ${description}`);
    expect(existsSync(marker)).toBe(false);
    expect(await typesOf(server, taskId)).toEqual(expect.arrayContaining(["tool.called", "tool.completed"]));
  });

  it("hands the command the results of the tasks it depended on, in a file", async () => {
    const server = await stack();
    const worker = agent(server, {
      handler: execHandler(
        'if [ -n "$SWARM_TASK_DEPENDENCIES_FILE" ]; then cat "$SWARM_TASK_DEPENDENCIES_FILE"; else printf "x%.0s" $(seq 1 40000); fi',
        10_000,
      ),
    });
    await worker.start();
    const big = await postTask(server, { description: "big" });
    await eventually(
      () => taskStatus(server, big),
      (status) => status === "completed",
    );
    const after = await postTask(server, { description: "after", depends_on: [big] });
    await eventually(
      () => taskStatus(server, after),
      (status) => status === "completed",
    );
    const result = JSON.parse(server.coordinator.getTask(after)?.result ?? "null") as {
      id: string;
      result: string;
    }[];
    expect(result).toEqual([{ id: big, result: "x".repeat(40_000) }]);
  });

  it("stops the command when the coordinator times the run out", async () => {
    const server = await stack();
    // The command says when it is told to stop: its process group gets SIGTERM.
    const marker = join(tempDir(), "terminated");
    const worker = agent(server, {
      handler: execHandler(`trap 'touch ${marker}; exit 1' TERM; sleep 30 & wait`, 60_000),
    });
    await worker.start();
    const taskId = await postTask(server, { description: "hang", timeout_ms: 400 });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "failed",
    );
    expect(server.coordinator.getTask(taskId)?.error).toBe("timed out after 400 ms");
    await eventually(
      () => existsSync(marker),
      (stopped) => stopped,
    );
  });

  it("fails the task with the exit code and stderr of a failing command", async () => {
    const server = await stack();
    const worker = agent(server, { handler: execHandler("echo 'disk full' >&2; exit 3", 10_000) });
    await worker.start();
    const taskId = await postTask(server, { description: "write the file" });
    await eventually(
      () => taskStatus(server, taskId),
      (status) => status === "failed",
    );
    expect(server.coordinator.getTask(taskId)?.error).toBe("exit code 3: disk full");
    expect(await typesOf(server, taskId)).toContain("tool.failed");
  });

  it("works as a command: swarm-agent joins, runs tasks with --exec, naming each apart, and leaves on SIGTERM", async () => {
    const server = await stack();
    const child = spawn(
      process.execPath,
      [
        "bin/swarm-agent.js",
        "--server",
        server.base,
        "--name",
        "cli-agent",
        "--key",
        KEY,
        "--max-concurrent",
        "2",
        "--exec",
        'printf %s "$SWARM_TASK_DESCRIPTION" | tr a-z A-Z',
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    running.push({ stop: async () => void child.kill("SIGKILL") });
    const joined = await eventually(
      () => server.coordinator.listAgents().find((a) => a.name === "cli-agent"),
      (found) => found !== undefined,
      20_000,
    );
    await eventually(
      () => stderr,
      (text) => text.includes("waiting for auctions"),
      20_000,
    );
    // Posted together, their ids begin with the same digits; the agent's lines must tell them
    // apart. The window is long so that a loaded machine does not close it before the bid (it
    // closes as soon as the only agent has bid).
    const [taskId, otherId] = await Promise.all([
      postTask(server, { description: "shout this", auction_ms: 10_000 }),
      postTask(server, { description: "and this too", auction_ms: 10_000 }),
    ]);
    for (const id of [taskId, otherId]) {
      await eventually(
        () => taskStatus(server, id),
        (status) => status === "completed",
        20_000,
      );
    }
    expect(server.coordinator.getTask(taskId)?.result).toBe("SHOUT THIS");
    child.kill("SIGTERM");
    expect(await exited, stderr).toBe(0);
    expect(server.coordinator.getAgent(joined?.id ?? "")?.left_at).not.toBeNull();
    const lines = stderr
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { msg: string; task_id?: string });
    for (const [id, description] of [
      [taskId, "shout this"],
      [otherId, "and this too"],
    ] as const) {
      expect(lines, id).toContainEqual(
        expect.objectContaining({ task_id: id, msg: `running task ${shortId(id)} "${description}"` }),
      );
      expect(lines, id).toContainEqual(
        expect.objectContaining({ task_id: id, msg: `completed task ${shortId(id)} "${description}"` }),
      );
    }
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: expect.stringContaining(`as cli-agent (${shortId(joined?.id)})`) }),
    );
  });

  it("waits for a coordinator that is not up yet, and gives up at once on a wrong key", async () => {
    const placeholder = await startStack(tempDbPath());
    const { port } = placeholder;
    await placeholder.stop(); // nothing listens on this port now
    const child = spawn(
      process.execPath,
      [
        "bin/swarm-agent.js",
        "--server",
        `http://127.0.0.1:${port}`,
        "--name",
        "early-bird",
        "--key",
        KEY,
        "--log-level",
        "silent",
      ],
      { stdio: "ignore" },
    );
    running.push({ stop: async () => void child.kill("SIGKILL") });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const server = await stack(tempDbPath(), port);
    await eventually(
      () => server.coordinator.listAgents().some((a) => a.name === "early-bird"),
      (joined) => joined,
      20_000,
    );

    const refused = spawn(
      process.execPath,
      [
        "bin/swarm-agent.js",
        "--server",
        server.base,
        "--key",
        "not-the-operator-key",
        "--log-level",
        "silent",
      ],
      {
        stdio: "ignore",
      },
    );
    expect(await new Promise((resolve) => refused.on("exit", resolve))).toBe(1);
  });

  it("refuses a bad flag with a message that names it", () => {
    const cases: [string[], RegExp][] = [
      [["--max-concurrent", "0"], /--max-concurrent must be a whole number from 1 to 100/],
      [["--bid-base", "cheap"], /--bid-base must be a whole number/],
      [["--server", "ftp://x"], /--server must be an http/],
      [["--capabilities", "Has Spaces"], /--capabilities: "Has Spaces"/],
      [["--frobnicate"], /Unknown option '--frobnicate'/],
      [["--exec", "  "], /--exec needs a command/],
      [["--fail-rate", "2"], /--fail-rate must be a number from 0 to 1/],
      [["--heartbeat-ms", "50"], /--heartbeat-ms must be a whole number from 100 to 3600000/],
      [["--grace-ms", "1.5"], /--grace-ms must be a whole number from 0 to 3600000/],
    ];
    for (const [argv, message] of cases) {
      expect(() => parseCommand(argv, {}), argv.join(" ")).toThrow(UsageError);
      expect(() => parseCommand(argv, {})).toThrow(message);
    }
    expect(parseCommand(["--help"], {})).toBe("help");
    expect(
      parseCommand(["--capabilities", "a, b,", "--adaptive"], { SWARM_SERVER: "http://10.0.0.5:3000/" }),
    ).toMatchObject({
      server: "http://10.0.0.5:3000",
      capabilities: ["a", "b"],
      adaptive: true,
      maxConcurrent: 1,
      heartbeatMs: 10_000,
      graceMs: 10_000,
    });
  });
});

describe("stopping with tasks in hand", () => {
  const LAUNCHER = "bin/swarm-agent.js";

  /**
   * `swarm-agent` in a process group of its own, as a shell runs a foreground command, so that
   * `interrupt()` can send SIGINT to the whole group as Ctrl-C in a terminal does.
   */
  function agentProcess(server: Stack, name: string, args: string[]) {
    const child = spawn(
      process.execPath,
      [LAUNCHER, "--server", server.base, "--name", name, "--key", KEY, "--log-level", "info", ...args],
      { stdio: ["ignore", "ignore", "pipe"], detached: true },
    );
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    running.push({
      stop: async () => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      },
    });
    return {
      exited,
      stderr: () => stderr,
      interrupt: () => process.kill(-child.pid!, "SIGINT"),
      joined: () =>
        eventually(
          () => server.coordinator.listAgents().find((a) => a.name === name && a.left_at === null),
          (found) => found !== undefined,
          20_000,
        ).then((found) => found!.id),
    };
  }

  const isAlive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  it(
    "hands a task back on Ctrl-C once its grace runs out: auctioned again, not failed, and won and completed by another agent",
    { timeout: 60_000 },
    async () => {
      const server = await stack();
      const dir = tempDir();
      const pidFile = join(dir, "command.pid");
      const first = agentProcess(server, "stopping", [
        "--grace-ms",
        "1000",
        "--exec",
        `echo $$ > ${pidFile}; sleep 60; echo never`,
      ]);
      const firstId = await first.joined();
      // A window long enough for a process on a busy machine to bid; it closes once it has.
      const taskId = await postTask(server, { description: "a long job", auction_ms: 20_000 });
      await eventually(
        () => existsSync(pidFile) && readFileSync(pidFile, "utf8").trim() !== "",
        (started) => started,
        20_000,
      );
      const commandPid = Number(readFileSync(pidFile, "utf8"));
      expect(server.coordinator.getTask(taskId)).toMatchObject({
        status: "running",
        assigned_agent: firstId,
      });

      // Another agent joins now: the task is not its until the first hands it back.
      const second = agent(server, { name: "taker", handler: async ({ task }) => `took over ${task.id}` });
      await second.start();
      first.interrupt();
      expect(await first.exited, first.stderr()).toBe(0);
      // The new round may run its whole 20 s window: the taker's bid closes it early only if
      // the stopping agent had left by then (a departure does not close an auction).
      await eventually(
        () => taskStatus(server, taskId),
        (status) => status === "completed",
        35_000,
      );

      const timeline = server.eventLog.getTaskEvents(taskId);
      const types = timeline.map((event) => event.event_type);
      expect(types).not.toContain("task.failed");
      expect(types.slice(types.indexOf("task.started"))).toEqual([
        "task.started",
        "tool.called",
        "tool.failed", // the open shell.exec call, ended by the hand-back
        "task.released",
        "task.bidding",
        "bid.submitted",
        "auction.closed",
        "task.assigned",
        "task.started",
        "task.completed",
      ]);
      expect(timeline.find((event) => event.event_type === "task.released")).toMatchObject({
        source: firstId,
        data: { reason: "agent stopping: not finished within its 1000 ms grace", attempt: 1 },
      });
      expect(server.coordinator.getTask(taskId)).toMatchObject({
        assigned_agent: second.id,
        attempt: 2,
        releases: 1,
        result: `took over ${taskId}`,
      });
      expect(server.coordinator.getAgent(firstId)?.left_at).not.toBeNull();
      // Ctrl-C reached the agent only; the agent stopped its command when the grace ran out.
      await eventually(
        () => isAlive(commandPid),
        (alive) => !alive,
      );
    },
  );

  it(
    "lets a task finish within the grace on Ctrl-C: it completes, and the agent leaves",
    { timeout: 60_000 },
    async () => {
      const server = await stack();
      const dir = tempDir();
      const started = join(dir, "started");
      const proceed = join(dir, "proceed");
      const first = agentProcess(server, "finisher", [
        "--grace-ms",
        "20000",
        "--exec",
        `touch ${started}; while [ ! -e ${proceed} ]; do sleep 0.05; done; echo finished after the signal`,
      ]);
      const agentId = await first.joined();
      const taskId = await postTask(server, { description: "finish me", auction_ms: 20_000 });
      await eventually(
        () => existsSync(started),
        (yes) => yes,
        20_000,
      );
      first.interrupt();
      // The agent is stopping: it has closed its stream but still holds the task, and beats.
      await eventually(
        () => server.coordinator.getTask(taskId)?.status,
        (status) => status === "running",
      );
      writeFileSync(proceed, "");
      expect(await first.exited, first.stderr()).toBe(0);
      expect(server.coordinator.getTask(taskId)).toMatchObject({
        status: "completed",
        assigned_agent: agentId,
        result: "finished after the signal",
        releases: 0,
      });
      const types = typesOf(server, taskId);
      expect(types).not.toContain("task.released");
      expect(types).not.toContain("task.failed");
      expect(server.coordinator.getAgent(agentId)?.left_at).not.toBeNull();
    },
  );

  it("aborts the handler's signal when the grace runs out, and drops what it returns after", async () => {
    const server = await stack();
    let aborted: unknown;
    let returned = false;
    const worker = agent(server, {
      stopGraceMs: 300,
      handler: async ({ signal, tool }) => {
        await tool("slow.step", {}, () => "quick");
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        aborted = signal.reason;
        await delay(200); // a handler that ignores the abort and returns anyway
        returned = true;
        return "too late";
      },
    });
    await worker.start();
    const taskId = await postTask(server, { description: "abandon me", auction_ms: 20_000 });
    await eventually(
      () => typesOf(server, taskId),
      (types) => types.includes("tool.completed"),
    );
    await worker.stop();
    expect(String(aborted)).toContain("not finished within its 300 ms grace");
    expect(server.coordinator.getTask(taskId)).toMatchObject({
      status: "bidding",
      releases: 1,
      result: null,
    });
    await eventually(
      () => returned,
      (yes) => yes,
    );
    await delay(200); // time for a report that must not come
    expect(await typesOf(server, taskId)).not.toContain("task.completed");
    expect(worker.stats).toMatchObject({ handedBack: 1, completed: 0, failed: 0 });
  });
});

describe("bidding strategies", () => {
  const task = (description: string, extra: Record<string, unknown> = {}) => ({
    id: "t",
    description,
    status: "bidding",
    required_capabilities: [],
    max_bid_sats: null,
    attempt: 1,
    assigned_agent: null,
    auction_closes_at: null,
    ...extra,
  });
  const idle = { capabilities: [], running: 0, maxConcurrent: 2 };

  it("bids the base on a fitting task, more on an off-profile one, nothing when full, within the task's cap", () => {
    const strategy = matchStrategy({ baseSats: 100, keywords: ["sql"], jitter: 0 });
    expect(strategy.bid(task("write SQL for the report"), idle)).toBe(100);
    expect(strategy.bid(task("paint a fence"), idle)).toBe(300);
    expect(strategy.bid(task("write SQL"), { ...idle, running: 1 })).toBe(125);
    expect(strategy.bid(task("write SQL"), { ...idle, running: 2 })).toBeNull();
    expect(strategy.bid(task("write SQL", { max_bid_sats: 40 }), idle)).toBe(40);
    const jittery = matchStrategy({ baseSats: 100, keywords: ["sql"], jitter: 0.2, random: () => 1 });
    expect(jittery.bid(task("sql"), idle)).toBe(120);
  });

  it("adapts: a winning streak raises the price, losing lowers it, within bounds", () => {
    const strategy = adaptiveStrategy({
      baseSats: 100,
      keywords: ["x"],
      jitter: 0,
      step: 0.1,
      targetWinRate: 0.5,
    });
    for (let i = 0; i < 5; i++) strategy.onOutcome?.("won");
    const afterWins = strategy.bid(task("x"), idle) ?? 0;
    expect(afterWins).toBeGreaterThan(100);
    for (let i = 0; i < 40; i++) strategy.onOutcome?.("lost");
    expect(strategy.bid(task("x"), idle)).toBeLessThan(100);
    expect(strategy.multiplier()).toBeGreaterThanOrEqual(0.25);
  });
});

describe("demo swarm", () => {
  it("completes tasks within seconds of starting", { timeout: 40_000 }, async () => {
    const server = await stack();
    const swarm = await startDemoSwarm({ server: server.base, apiKey: KEY, taskEveryMs: 300 });
    running.push(swarm);
    expect(swarm.agents).toHaveLength(6);
    const completed = await eventually(
      () => server.eventLog.listEvents({ types: ["task.completed"] }).events.length,
      (count) => count >= 1,
      25_000,
    );
    expect(completed).toBeGreaterThanOrEqual(1);
    const types = new Set(server.eventLog.listEvents({ limit: 1000 }).events.map((e) => e.event_type));
    for (const type of [
      "agent.joined",
      "task.created",
      "bid.submitted",
      "task.assigned",
      "tool.called",
      "task.completed",
    ]) {
      expect(types, type).toContain(type);
    }
  });

  it(
    "stops without failing anything it holds: tasks in hand finish or go back, its open auctions are withdrawn",
    { timeout: 60_000 },
    async () => {
      const server = await stack();
      const swarm = await startDemoSwarm({ server: server.base, apiKey: KEY, taskEveryMs: 200 });
      running.push(swarm);
      await eventually(
        () => server.coordinator.store.listTasks({ status: "running", limit: 10 }).tasks.length,
        (count) => count >= 2,
        25_000,
      );
      const stopAt = server.eventLog.latestSeq();
      await swarm.stop();
      for (const status of ["bidding", "assigned", "running"]) {
        expect(server.coordinator.store.listTasks({ status, limit: 10 }).tasks, status).toEqual([]);
      }
      const after = server.eventLog.listEvents({ after_seq: stopAt, limit: 1000 }).events;
      // A demo handler may still fail a task on its own (its profile's fail rate); the stop fails none.
      const failures = after.filter((event) => event.event_type === "task.failed");
      for (const failure of failures) expect(failure.data.reason).toMatch(/could not finish/);
      const withdrawn = after.filter((event) => event.event_type === "task.cancelled");
      for (const cancel of withdrawn) expect(cancel.data.reason).toBe("the demo stopped");
      expect(server.coordinator.listAgents().every((agent) => agent.left_at !== null)).toBe(true);
    },
  );
});

describe("swarm-agent through its server's death", () => {
  it(
    "keeps running when the server its stream is on is killed, reconnects once it is back, and goes on winning",
    { timeout: 90_000 },
    async () => {
      const db = tempDbPath();
      const port = String(await freePort());
      const env = { SWARM_DB: db, SWARM_API_KEY: KEY, SWARM_RATE_LIMIT: "0", PORT: port };
      const up = async () => {
        const server = startServer(env);
        const ready = await server.waitFor((line) => line.msg === "swarm coordinator ready", 30_000);
        return { server, url: String(ready.url) };
      };
      let { server, url } = await up();
      const child = spawn(
        process.execPath,
        [
          "bin/swarm-agent.js",
          "--server",
          url,
          "--name",
          "outlives",
          "--key",
          KEY,
          "--log-level",
          "info",
          "--exec",
          "echo done",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      running.push({ stop: async () => void child.kill("SIGKILL") });
      await eventually(
        () => stderr,
        (text) => text.includes("waiting for auctions"),
        20_000,
      );

      server.child.kill("SIGKILL");
      await server.exited;
      // Down for longer than the agent's first reconnect delays: nothing but its timers is left
      // to keep it running, and it must not take that for the end.
      await delay(3000);
      expect(child.exitCode).toBeNull();
      ({ server, url } = await up());

      const client = new SwarmClient(url, { token: KEY });
      const { task } = await client.request<{ task: { id: string } }>("POST", "/api/tasks", {
        description: "after the restart",
        auction_ms: 10_000,
      });
      await eventually(
        async () => (await client.getTask(task.id)).status,
        (status) => status === "completed",
        30_000,
      );
      expect(child.exitCode).toBeNull();
    },
  );
});
