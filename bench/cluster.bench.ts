/**
 * A cluster of replicas on one PostgreSQL, measured on this machine:
 *
 * - accepted bids per second through a round-robin TCP balancer in front of 1, 2 and 3
 *   replicas (api.bench.ts's load, measureBids), each count on a fresh database, one after the
 *   other in this run, so the ratios compare like with like;
 * - commit-to-stream latency: events written through replica A, received by stream clients on
 *   replica B (the doorbell and the tail) beside clients on A itself, at the same time;
 * - failover: the lease holder is killed with SIGKILL while auctions are open; how late after
 *   their deadlines the others close them, and how long until another replica holds the lease.
 *
 * Uses SWARM_BENCH_POSTGRES_URL, or a private server (postgres.bench.ts, benchPostgresServer).
 */
import WebSocket from "ws";
import { startBalancer } from "./balancer.js";
import { measureBids, reportTools, type BidsResult } from "./api.bench.js";
import { api, BENCH_KEY, PRODUCT, registerAgents, start, stop, type Running } from "./harness.js";
import { percentile, round } from "./machine.js";
import { benchPostgresServer, freshDatabase } from "./postgres.bench.js";

const TIMESTAMP = /"timestamp":"([^"]+)"/;
const LEASE_MS = 10_000; // the default SWARM_LEASE_MS

export interface ClusterBenchResult {
  bids: { replicas: number; result: BidsResult }[];
  stream: {
    events_per_second: number;
    same: { messages: number; p50_ms: number; p99_ms: number; max_ms: number };
    cross: { messages: number; p50_ms: number; p99_ms: number; max_ms: number };
  };
  failover: {
    trials: number;
    auctions: number;
    /** Over every auction of every trial: how long after its deadline it closed, ms. */
    close_late_p50_ms: number;
    close_late_max_ms: number;
    /** Kill to another replica holding the lease, ms, each trial. */
    lease_moved_ms: number[];
  };
}

function replicaEnv(db: string, id: string): Record<string, string> {
  return {
    SWARM_DB: db,
    SWARM_API_KEY: BENCH_KEY,
    SWARM_RATE_LIMIT: "0",
    SWARM_REPLICA_ID: id,
    SWARM_AUCTION_MS: "600000",
    SWARM_HEARTBEAT_TIMEOUT_MS: "3600000",
    LOG_LEVEL: "warn",
  };
}

/** `count` replicas on `db`, started one after the other (the first migrates). */
async function startReplicas(db: string, count: number, prefix = "bench-r"): Promise<Running[]> {
  const replicas: Running[] = [];
  for (let i = 0; i < count; i += 1) replicas.push(await start(PRODUCT, replicaEnv(db, `${prefix}${i + 1}`)));
  return replicas;
}

const hostOf = (replica: Running) => new URL(replica.url).host;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function summary(values: number[]): { messages: number; p50_ms: number; p99_ms: number; max_ms: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    messages: sorted.length,
    p50_ms: round(percentile(sorted, 50), 1),
    p99_ms: round(percentile(sorted, 99), 1),
    max_ms: sorted.at(-1) ?? 0,
  };
}

async function bidsWith(serverUrl: string, count: number, seconds: number): Promise<BidsResult> {
  const replicas = await startReplicas(await freshDatabase(serverUrl), count);
  // Every count goes through the same balancer, one replica too: the proxy's own cost is in
  // each figure alike.
  const balancer = await startBalancer(replicas.map(hostOf));
  try {
    return (
      await measureBids(
        balancer.url,
        seconds,
        replicas.map((replica) => replica.url),
      )
    ).result;
  } finally {
    await balancer.close();
    for (const replica of replicas) await stop(replica);
  }
}

/** Stream clients on A and on B, tool reports written through A at `rate` a second. */
async function streamLatency(
  serverUrl: string,
  seconds: number,
  rate: number,
): Promise<ClusterBenchResult["stream"]> {
  const [a, b] = (await startReplicas(await freshDatabase(serverUrl), 2)) as [Running, Running];
  try {
    const [worker] = await registerAgents(a.url, 1, () => ({ name: "tool runner", max_concurrent: 20 }));
    const runningTasks: string[] = [];
    for (let i = 0; i < 20; i += 1) {
      const { task } = await api<{ task: { id: string } }>(`${a.url}/api/tasks`, "POST", BENCH_KEY, {
        description: `tool run ${i}`,
        auction_ms: 200,
      });
      await api(`${a.url}/api/tasks/${task.id}/bids`, "POST", worker!.token, { bid_sats: 1 });
      runningTasks.push(task.id);
    }
    await pause(800); // the short auctions close
    for (const id of runningTasks) await api(`${a.url}/api/tasks/${id}/start`, "POST", worker!.token);

    const latencies = { same: [] as number[], cross: [] as number[] };
    const connect = (replica: Running, into: number[]) =>
      new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(
          `${replica.url.replace("http", "ws")}/api/stream?token=${BENCH_KEY}&type=tool.called`,
        );
        socket.on("message", (data: Buffer) => {
          const stamp = TIMESTAMP.exec(data.toString());
          if (stamp?.[1] !== undefined) into.push(Date.now() - Date.parse(stamp[1]));
        });
        socket.once("open", () => resolve(socket));
        socket.once("error", reject);
      });
    const clients = [
      ...(await Promise.all(Array.from({ length: 20 }, () => connect(a, latencies.same)))),
      ...(await Promise.all(Array.from({ length: 20 }, () => connect(b, latencies.cross)))),
    ];
    const producer = await reportTools(a.url, worker!.token, runningTasks, seconds, rate);
    await pause(500);
    for (const client of clients) client.close();
    return {
      events_per_second: Math.round(producer["2xx"] / seconds),
      same: summary(latencies.same),
      cross: summary(latencies.cross),
    };
  } finally {
    await stop(a);
    await stop(b);
  }
}

interface Health {
  replica: { id: string; leader: boolean; lease_holder: string | null };
}

async function health(replica: Running): Promise<Health> {
  return (await (await fetch(`${replica.url}/healthz`)).json()) as Health;
}

/**
 * Kill the lease holder while `auctions` auctions it opened are open, `trials` times; it comes
 * back (under its name) before the next trial.
 */
async function failover(
  serverUrl: string,
  trials: number,
  auctions: number,
): Promise<ClusterBenchResult["failover"]> {
  const db = await freshDatabase(serverUrl);
  const replicas = await startReplicas(db, 3);
  const late: number[] = [];
  const leaseMoved: number[] = [];
  try {
    // An agent that never bids keeps every auction open to its deadline.
    const [idle] = await registerAgents((replicas[0] as Running).url, 1, () => ({ name: "never bids" }));
    for (let trial = 0; trial < trials; trial += 1) {
      let holder: string | null = null;
      for (let waited = 0; holder === null && waited < 3 * LEASE_MS; waited += 100) {
        holder = (await health(replicas[0] as Running)).replica.lease_holder;
        if (holder === null) await pause(100);
      }
      const victimIndex = (await Promise.all(replicas.map(health))).findIndex((h) => h.replica.id === holder);
      if (victimIndex < 0) throw new Error("no replica holds the lease");
      const victim = replicas[victimIndex] as Running;
      const others = replicas.filter((_, i) => i !== victimIndex);
      const witness = others[0] as Running;
      await api(`${witness.url}/api/agents/${idle!.id}/heartbeat`, "POST", idle!.token);
      const opened: string[] = [];
      for (let i = 0; i < auctions; i += 1) {
        const { task } = await api<{ task: { id: string } }>(`${victim.url}/api/tasks`, "POST", BENCH_KEY, {
          description: `failover ${trial}.${i}`,
          auction_ms: 1000 + Math.floor((i * 1000) / auctions),
        });
        opened.push(task.id);
      }
      const exited = new Promise((resolve) => victim.child.once("exit", resolve));
      victim.child.kill("SIGKILL");
      const killedAt = Date.now();
      await exited;
      let moved: number | undefined;
      while (moved === undefined && Date.now() - killedAt < 3 * LEASE_MS) {
        const now = (await health(witness)).replica.lease_holder;
        if (now !== null && now !== holder) moved = Date.now() - killedAt;
        else await pause(50);
      }
      leaseMoved.push(moved ?? Number.NaN);
      for (const id of opened) {
        const { events } = await api<{
          events: { event_type: string; timestamp: string; data: { closes_at?: string } }[];
        }>(`${witness.url}/api/tasks/${id}/events?limit=100`, "GET", BENCH_KEY);
        const closesAt = events.find((event) => event.event_type === "task.bidding")?.data.closes_at;
        const closed = events.find((event) => event.event_type === "auction.closed");
        if (closesAt === undefined || closed === undefined) late.push(Number.POSITIVE_INFINITY);
        else late.push(Date.parse(closed.timestamp) - Date.parse(closesAt));
      }
      replicas[victimIndex] = await start(PRODUCT, replicaEnv(db, holder as string));
    }
  } finally {
    for (const replica of replicas)
      if (replica.child.exitCode === null && replica.child.signalCode === null) await stop(replica);
  }
  const sorted = [...late].sort((x, y) => x - y);
  return {
    trials,
    auctions: late.length,
    close_late_p50_ms: percentile(sorted, 50),
    close_late_max_ms: sorted.at(-1) ?? Number.NaN,
    lease_moved_ms: leaseMoved,
  };
}

export async function benchCluster(
  options: { bidSeconds?: number; streamSeconds?: number; trials?: number } = {},
): Promise<ClusterBenchResult> {
  const server = benchPostgresServer();
  try {
    const bidSeconds = options.bidSeconds ?? 10;
    const bids: ClusterBenchResult["bids"] = [];
    for (const replicas of [1, 2, 3])
      bids.push({ replicas, result: await bidsWith(server.url, replicas, bidSeconds) });
    const stream = await streamLatency(server.url, options.streamSeconds ?? 10, 500);
    const fail = await failover(server.url, options.trials ?? 3, 30);
    return { bids, stream, failover: fail };
  } finally {
    server.stop();
  }
}
