/**
 * A cluster: three real server processes (`npm start`) on one PostgreSQL database, checked
 * through the public API only. Any replica serves anyone; an auction closes once, to the right
 * winner, whichever replicas the bids came through; every replica's stream carries every event
 * once, in seq order, and a client resumes on another replica where it left off; a replica lost
 * to kill -9 stops nothing (its auctions close on time elsewhere, the lease moves, an agent behind
 * a load balancer carries on); a replica with a skewed clock judges deadlines as the others do.
 */
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { SwarmAgent } from "../../src/agent/agent.js";
import { startBalancer, type Balancer } from "../../bench/balancer.js";
import { createTestDatabase, havePostgres } from "../helpers/postgres.js";
import { startServer } from "../helpers/server-process.js";
import { eventually } from "../helpers/stack.js";

const KEY = "operator-key-for-the-cluster-test";
const SKEWED_CLOCK = fileURLToPath(new URL("../fixtures/skewed-clock.mjs", import.meta.url));
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

interface Replica {
  id: string;
  url: string;
  server: ReturnType<typeof startServer>;
}

interface StreamEvent {
  seq: number;
  event_type: string;
  task_id: string | null;
  agent_id: string | null;
  timestamp: string;
  data: Json;
}

async function call(
  base: string,
  method: string,
  path: string,
  body?: object,
  token = KEY,
  headers: Record<string, string> = {},
) {
  const response = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body ? { "content-type": "application/json" } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Json };
}

/** A stream client on one replica, from `afterSeq`, keeping every event it hears. */
function follow(base: string, afterSeq = 0) {
  const events: StreamEvent[] = [];
  const socket = new WebSocket(`${base.replace("http", "ws")}/api/stream?after_seq=${afterSeq}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  socket.on("message", (data: Buffer) => {
    const message = JSON.parse(data.toString()) as { type: string; event?: StreamEvent };
    if (message.type === "event" && message.event !== undefined) events.push(message.event);
  });
  const open = new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  return {
    events,
    open,
    /** Resolves once the client has heard every event up to `seq`. */
    through: (seq: number, timeoutMs = 15_000) =>
      eventually(
        () => events.at(-1)?.seq ?? afterSeq,
        (last) => last >= seq,
        timeoutMs,
      ),
    close: () => socket.close(),
  };
}

const seqsOf = (events: readonly StreamEvent[]) => events.map((event) => event.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe.skipIf(!havePostgres)("a cluster of replicas on one PostgreSQL", () => {
  const balancers: Balancer[] = [];
  const agents: SwarmAgent[] = [];
  afterEach(async () => {
    for (const agent of agents.splice(0)) await agent.stop({ graceMs: 0 }).catch(() => undefined);
    for (const balancer of balancers.splice(0)) await balancer.close();
  });

  async function startReplica(
    db: string,
    id: string,
    env: Record<string, string> = {},
    nodeArgs: string[] = [],
  ): Promise<Replica> {
    const server = startServer(
      {
        SWARM_DB: db,
        SWARM_API_KEY: KEY,
        SWARM_REPLICA_ID: id,
        SWARM_RATE_LIMIT: "0",
        SWARM_LEASE_MS: "3000",
        ...env,
      },
      undefined,
      nodeArgs,
    );
    const ready = await server.waitFor((line) => line.msg === "swarm coordinator ready", 30_000);
    return { id, url: String(ready.url), server };
  }

  async function startCluster(
    env: Record<string, string> = {},
  ): Promise<{ db: string; replicas: Replica[] }> {
    const db = await createTestDatabase();
    // One first, so the schema is made once; the others join it.
    const first = await startReplica(db, "r-a", env);
    const rest = await Promise.all([startReplica(db, "r-b", env), startReplica(db, "r-c", env)]);
    return { db, replicas: [first, ...rest] };
  }

  const latestSeq = async (replica: Replica) =>
    (await call(replica.url, "GET", "/healthz")).body.latest_seq as number;

  it(
    "serves anyone from any replica: register on one, heartbeat through another, bid through a third, one close, every stream the same",
    { timeout: 120_000 },
    async () => {
      const { replicas } = await startCluster({ SWARM_AUCTION_MS: "60000" });
      const [a, b, c] = replicas as [Replica, Replica, Replica];
      const streams = replicas.map((replica) => follow(replica.url));
      await Promise.all(streams.map((stream) => stream.open));

      // Three agents, each registered on a different replica.
      const registered = await Promise.all(
        replicas.map((replica, i) =>
          call(replica.url, "POST", "/api/agents", { name: `w${i}`, capabilities: ["code"] }),
        ),
      );
      const workers = registered.map((r) => r.body as { agent: { id: string }; token: string });
      // Heartbeats through the next replica round: whoever receives it knows the agent.
      for (const [i, worker] of workers.entries()) {
        const through = replicas[(i + 1) % 3] as Replica;
        expect(
          (await call(through.url, "POST", `/api/agents/${worker.agent.id}/heartbeat`, {}, worker.token))
            .status,
        ).toBe(200);
      }

      // Rounds of auctions: posted on one replica, the three bids through three replicas at once.
      // The lowest bid wins; on a tie, the bid the database ordered first.
      const outcomes: { taskId: string; bids: number[]; acknowledged: boolean[] }[] = [];
      for (let round = 0; round < 8; round += 1) {
        const poster = replicas[round % 3] as Replica;
        const posted = await call(poster.url, "POST", "/api/tasks", {
          description: `round ${round}`,
          required_capabilities: ["code"],
        });
        expect(posted.status).toBe(201);
        const taskId = String(posted.body.task.id);
        const bids = round % 2 === 0 ? [30 + round, 10 + round, 20 + round] : [7, 7, 7];
        const answers = await Promise.all(
          workers.map((worker, i) =>
            call(
              (replicas[(i + round) % 3] as Replica).url,
              "POST",
              `/api/tasks/${taskId}/bids`,
              { bid_sats: bids[i] },
              worker.token,
            ),
          ),
        );
        outcomes.push({ taskId, bids, acknowledged: answers.map((answer) => answer.status === 201) });
        // The last bid in closes the auction ("all bids in"); finish the task so every agent is free again.
        const task = await eventually(
          async () => (await call(c.url, "GET", `/api/tasks/${taskId}`)).body.task as Json,
          (t) => t.status === "assigned",
        );
        const winner = workers.find((worker) => worker.agent.id === task.assigned_agent);
        expect(winner).toBeDefined();
        const via = replicas[(round + 2) % 3] as Replica;
        expect((await call(via.url, "POST", `/api/tasks/${taskId}/start`, {}, winner?.token)).status).toBe(
          200,
        );
        expect(
          (await call(a.url, "POST", `/api/tasks/${taskId}/complete`, { result: "ok" }, winner?.token))
            .status,
        ).toBe(200);
      }

      const latest = await latestSeq(b);
      await Promise.all(streams.map((stream) => stream.through(latest)));
      // Every replica's stream: every event once, in seq order, the same events on each.
      for (const stream of streams) expect(seqsOf(stream.events)).toEqual(range(1, latest));
      expect(streams[1]?.events).toEqual(streams[0]?.events);
      expect(streams[2]?.events).toEqual(streams[0]?.events);

      const events = streams[0]?.events ?? [];
      for (const { taskId, bids, acknowledged } of outcomes) {
        expect(acknowledged).toEqual([true, true, true]);
        const own = events.filter((event) => event.task_id === taskId);
        expect(own.filter((event) => event.event_type === "auction.closed")).toHaveLength(1);
        const assigned = own.filter((event) => event.event_type === "task.assigned");
        expect(assigned).toHaveLength(1);
        // The winner: lowest, then earliest in the log's order of the bids.
        const placed = own.filter((event) => event.event_type === "bid.submitted");
        expect(placed).toHaveLength(3);
        const lowest = Math.min(...bids);
        const expected = placed.find((event) => event.data.bid_sats === lowest);
        expect(assigned[0]?.agent_id).toBe(expected?.agent_id);
        expect(assigned[0]?.data.bid_sats).toBe(lowest);
      }

      // Each replica names itself, and exactly one holds the lease.
      const health = await Promise.all(replicas.map((replica) => call(replica.url, "GET", "/healthz")));
      expect(health.map((h) => h.body.replica.id)).toEqual(["r-a", "r-b", "r-c"]);
      const leaders = await eventually(
        async () =>
          (await Promise.all(replicas.map((replica) => call(replica.url, "GET", "/healthz")))).filter(
            (h) => h.body.replica.leader === true,
          ),
        (found) => found.length === 1,
      );
      const leader = String(leaders[0]?.body.replica.id);
      for (const h of health) expect(h.body.replica.peers).toBe(2);
      const metrics = await (await fetch(`${a.url}/metrics`)).text();
      expect(metrics).toMatch(
        new RegExp(`swarm_replica_lease_held\\{replica="r-a"\\} ${leader === "r-a" ? 1 : 0}`),
      );
      for (const stream of streams) stream.close();
    },
  );

  it(
    "closes auctions bid on through every replica at the deadline once each, keeping every acknowledged bid",
    { timeout: 120_000 },
    async () => {
      const { replicas } = await startCluster();
      const workers: { agent: { id: string }; token: string }[] = [];
      for (let i = 0; i < 4; i += 1) {
        const r = await call((replicas[i % 3] as Replica).url, "POST", "/api/agents", {
          name: `w${i}`,
          max_concurrent: 50,
        });
        workers.push(r.body as unknown as { agent: { id: string }; token: string });
      }
      // One more agent that never bids: no auction closes early for want of bidders.
      await call(replicas[0]!.url, "POST", "/api/agents", { name: "watcher" });
      const tasks: string[] = [];
      for (let i = 0; i < 12; i += 1) {
        const posted = await call((replicas[i % 3] as Replica).url, "POST", "/api/tasks", {
          description: `race ${i}`,
          auction_ms: 400 + 40 * i,
        });
        tasks.push(String(posted.body.task.id));
      }
      // Bids keep arriving through all three replicas until well past every deadline.
      const acknowledged = new Map<string, { agent: string; sats: number }[]>();
      const stopAt = Date.now() + 1500;
      let n = 0;
      await Promise.all(
        workers.map(async (worker, w) => {
          while (Date.now() < stopAt) {
            n += 1;
            const taskId = tasks[(n + w) % tasks.length] as string;
            const sats = 1 + ((n * 7 + w * 13) % 90);
            const replica = replicas[(n + w) % 3] as Replica;
            const answer = await call(
              replica.url,
              "POST",
              `/api/tasks/${taskId}/bids`,
              { bid_sats: sats },
              worker.token,
            );
            if (answer.status === 201) {
              const list = (acknowledged.get(taskId) ?? []).filter((bid) => bid.agent !== worker.agent.id);
              acknowledged.set(taskId, [...list, { agent: worker.agent.id, sats }]);
            } else {
              expect(answer.status, JSON.stringify(answer.body)).toBe(409);
              expect(["AUCTION_CLOSED", "TASK_NOT_BIDDING"]).toContain(answer.body.error.code);
            }
          }
        }),
      );
      const events: StreamEvent[] = [];
      for (const taskId of tasks) {
        const own = await eventually(
          async () =>
            (await call(replicas[2]!.url, "GET", `/api/tasks/${taskId}/events?limit=500`)).body
              .events as StreamEvent[],
          (list) => list.some((event) => event.event_type === "auction.closed"),
        );
        events.push(...own);
        expect(own.filter((event) => event.event_type === "auction.closed")).toHaveLength(1);
        expect(own.filter((event) => event.event_type === "task.assigned").length).toBeLessThanOrEqual(1);
        const bids = acknowledged.get(taskId) ?? [];
        const closed = own.find((event) => event.event_type === "auction.closed") as StreamEvent;
        // Every acknowledged bid (the last of each agent) is in the round the auction closed on.
        expect(closed.data.bids).toBe(bids.length);
        if (bids.length > 0) {
          // The winner: the lowest of each agent's standing bid (its last bid.submitted; the same
          // amount again writes nothing), ties to the bid the database ordered first.
          const standing = new Map<string, StreamEvent>();
          for (const event of own)
            if (event.event_type === "bid.submitted" && event.agent_id !== null)
              standing.set(event.agent_id, event);
          const lowest = Math.min(...bids.map((bid) => bid.sats));
          const first = [...standing.values()]
            .filter((event) => event.data.bid_sats === lowest)
            .sort((x, y) => x.seq - y.seq)[0];
          expect(closed.data.winning_bid_sats).toBe(lowest);
          expect(closed.data.winner).toBe(first?.agent_id);
        }
        const stored = await call(replicas[1]!.url, "GET", `/api/tasks/${taskId}/bids?limit=100`);
        expect(
          (stored.body.bids as { agent_id: string; bid_sats: number }[])
            .map((bid) => `${bid.agent_id}:${bid.bid_sats}`)
            .sort(),
        ).toEqual(bids.map((bid) => `${bid.agent}:${bid.sats}`).sort());
      }
      expect(events.length).toBeGreaterThan(0);
    },
  );

  it(
    "lets a stream client drop from one replica and resume on another with its last seq, missing nothing and hearing nothing twice",
    { timeout: 60_000 },
    async () => {
      const { replicas } = await startCluster();
      const [a, b, c] = replicas as [Replica, Replica, Replica];
      for (let i = 0; i < 5; i += 1) await call(a.url, "POST", "/api/tasks", { description: `before ${i}` });
      const first = follow(a.url);
      await first.through(await latestSeq(a));
      // Events keep coming, through all replicas, while the client moves.
      const writing = (async () => {
        for (let i = 0; i < 30; i += 1)
          await call((replicas[i % 3] as Replica).url, "POST", "/api/tasks", { description: `during ${i}` });
      })();
      await new Promise((resolve) => setTimeout(resolve, 100));
      first.close();
      const last = first.events.at(-1)?.seq ?? 0;
      const second = follow(b.url, last);
      await writing;
      const latest = await latestSeq(c);
      await second.through(latest);
      expect([...seqsOf(first.events.filter((e) => e.seq <= last)), ...seqsOf(second.events)]).toEqual(
        range(1, latest),
      );
      second.close();
    },
  );

  it(
    "survives kill -9 of a replica with open auctions: the others close them on time, the lease moves, an agent behind a balancer carries on, and the replica rejoins",
    { timeout: 120_000 },
    async () => {
      const { db, replicas } = await startCluster({ SWARM_HEARTBEAT_TIMEOUT_MS: "5000" });
      const [a, b, c] = replicas as [Replica, Replica, Replica];
      const balancer = await startBalancer(replicas.map((replica) => new URL(replica.url).host));
      balancers.push(balancer);
      const completed: string[] = [];
      const agent = new SwarmAgent({
        server: balancer.url,
        apiKey: KEY,
        name: "behind the balancer",
        maxConcurrent: 20,
        heartbeatMs: 500,
        reconnect: { minMs: 50, maxMs: 500 },
        strategy: { bid: () => 5 },
        handler: ({ task }) => {
          completed.push(task.id);
          return Promise.resolve("done");
        },
      });
      agents.push(agent);
      await agent.start();
      // A second agent that never bids: auctions wait for their deadline.
      const idle = (await call(b.url, "POST", "/api/agents", { name: "never bids" })).body as {
        agent: { id: string };
        token: string;
      };
      const keepIdleAlive = setInterval(
        () => void call(c.url, "POST", `/api/agents/${idle.agent.id}/heartbeat`, {}, idle.token),
        500,
      );
      try {
        const leaderBefore = await eventually(
          async () => (await call(b.url, "GET", "/healthz")).body.replica.lease_holder as string | null,
          (holder) => holder !== null,
        );
        // Auctions opened on A, then A is killed before any of them is due.
        const open: string[] = [];
        for (let i = 0; i < 6; i += 1) {
          const posted = await call(a.url, "POST", "/api/tasks", {
            description: `orphan ${i}`,
            auction_ms: 1500,
          });
          open.push(String(posted.body.task.id));
        }
        a.server.child.kill("SIGKILL");
        await a.server.exited;
        balancer.backends.splice(0, 1);

        for (const taskId of open) {
          const own = await eventually(
            async () =>
              (await call(b.url, "GET", `/api/tasks/${taskId}/events?limit=100`)).body
                .events as StreamEvent[],
            (events) => events.some((event) => event.event_type === "auction.closed"),
          );
          const bidding = own.find((event) => event.event_type === "task.bidding") as StreamEvent;
          const closed = own.filter((event) => event.event_type === "auction.closed");
          expect(closed).toHaveLength(1);
          const lateMs = Date.parse(closed[0]!.timestamp) - Date.parse(String(bidding.data.closes_at));
          expect(lateMs).toBeGreaterThanOrEqual(0);
          // Goal: within 1 s of the deadline, closed by a replica that was not the one killed.
          expect(lateMs).toBeLessThan(1000);
          expect(closed[0]?.data.reason).toBe("deadline");
        }
        // The agent, which reached A for some of its calls, finishes every task it won.
        await eventually(
          () => completed.length,
          (count) => count >= open.length,
          20_000,
        ).catch(async (error: unknown) => {
          const story = await Promise.all(
            open.map(async (taskId) =>
              (
                (await call(b.url, "GET", `/api/tasks/${taskId}/events?limit=100`)).body
                  .events as StreamEvent[]
              )
                .map(
                  (event) =>
                    `${event.event_type}${event.data.reason ? `(${String(event.data.reason)})` : ""}`,
                )
                .join(" "),
            ),
          );
          throw new Error(`${String(error)}; the tasks' events:\n${story.join("\n")}`);
        });
        for (const taskId of open)
          await eventually(
            async () => (await call(c.url, "GET", `/api/tasks/${taskId}`)).body.task.status as string,
            (status) => status === "completed",
          );
        // The lease: if A held it, another replica holds it within a lease and a beat.
        const leaderAfter = await eventually(
          async () => (await call(c.url, "GET", "/healthz")).body.replica.lease_holder as string | null,
          (holder) => holder !== null && holder !== "r-a",
          10_000,
        );
        expect(["r-b", "r-c"]).toContain(leaderAfter);
        if (leaderBefore !== "r-a") expect(leaderAfter).toBe(leaderBefore);
        // The agent is still online (heartbeats went to the others), and nothing was set offline
        // for the loss of a replica.
        expect((await call(b.url, "GET", `/api/agents/${agent.id}`)).body.agent.status).not.toBe("offline");

        // A comes back under its name and rejoins by itself, changing nobody's status.
        const back = await startReplica(db, "r-a");
        expect(back.server.lines.some((line) => line.msg === "replica joined a running cluster")).toBe(true);
        const health = await call(back.url, "GET", "/healthz");
        expect(health.body).toMatchObject({ status: "ok", replica: { id: "r-a", peers: 2 } });
        const posted = await call(back.url, "POST", "/api/tasks", {
          description: "after the return",
          auction_ms: 300,
        });
        await eventually(
          async () =>
            (await call(b.url, "GET", `/api/tasks/${String(posted.body.task.id)}`)).body.task
              .status as string,
          (status) => status === "completed",
          15_000,
        );
      } finally {
        clearInterval(keepIdleAlive);
      }
    },
  );

  it(
    "judges deadlines on the database's clock, so a replica whose clock is an hour ahead closes nothing early",
    { timeout: 60_000 },
    async () => {
      const db = await createTestDatabase();
      const honest = await startReplica(db, "r-honest");
      const skewed = await startReplica(db, "r-skewed", { SWARM_TEST_CLOCK_SKEW_MS: String(3_600_000) }, [
        "--import",
        SKEWED_CLOCK,
      ]);
      // The honest replica stops ticking, so only the skewed one can close these auctions.
      honest.server.child.kill("SIGSTOP");
      try {
        await call(skewed.url, "POST", "/api/agents", { name: "bidder" });
        const posted = await call(skewed.url, "POST", "/api/tasks", {
          description: "on time",
          auction_ms: 1500,
        });
        expect(posted.status).toBe(201);
        const task = posted.body.task as { id: string; created_at: string; auction_closes_at: string };
        // Stamped on the database's clock, not an hour ahead.
        expect(Math.abs(Date.parse(task.created_at) - Date.now())).toBeLessThan(60_000);
        await new Promise((resolve) => setTimeout(resolve, 700));
        expect((await call(skewed.url, "GET", `/api/tasks/${task.id}`)).body.task.status).toBe("bidding");
        const closed = await eventually(
          async () =>
            (
              (await call(skewed.url, "GET", `/api/tasks/${task.id}/events`)).body.events as StreamEvent[]
            ).find((event) => event.event_type === "auction.closed"),
          (event) => event !== undefined,
        );
        expect(Date.parse(String(closed?.timestamp))).toBeGreaterThanOrEqual(
          Date.parse(task.auction_closes_at),
        );
      } finally {
        honest.server.child.kill("SIGCONT");
      }
    },
  );
  it(
    "posts one task for one Idempotency-Key, however many replicas the same request reaches at once",
    { timeout: 60_000 },
    async () => {
      const { replicas } = await startCluster();
      const post = (replica: Replica, key: string) =>
        call(replica.url, "POST", "/api/tasks", { description: `retried ${key}`, auction_ms: 60_000 }, KEY, {
          "idempotency-key": key,
        });
      for (let round = 0; round < 10; round += 1) {
        const key = `retry-${round}`;
        // The same request through every replica at the same moment, as a client retrying
        // through a balancer after a timeout might send it.
        const answers = await Promise.all(replicas.map((replica) => post(replica, key)));
        expect(answers.map((answer) => answer.status).sort()).toEqual([200, 200, 201]);
        const ids = new Set(answers.map((answer) => answer.body.task.id as string));
        expect(ids.size).toBe(1);
        const [taskId] = [...ids];
        const events = (await call(replicas[0]!.url, "GET", `/api/tasks/${taskId}/events?limit=100`)).body
          .events as StreamEvent[];
        expect(events.filter((event) => event.event_type === "task.created")).toHaveLength(1);
      }
      const listed = (await call(replicas[1]!.url, "GET", "/api/tasks?limit=100")).body.tasks as unknown[];
      expect(listed).toHaveLength(10);
    },
  );
});
