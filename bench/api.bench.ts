/**
 * API benchmark, against the real server in its own process over loopback:
 * bids written per second with 50 connections spread over many open auctions (autocannon),
 * counted as the `bid.submitted` events the log gained, not as 2xx answers (an identical
 * repeated bid is an acknowledged no-op and writes nothing),
 * beside a bare Fastify route measured the same way; and event-to-stream latency with 200
 * stream clients while the swarm produces about 1,000 events a second.
 */
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import {
  api,
  BENCH_KEY as KEY,
  readMetrics,
  registerAgents,
  run,
  start,
  startProduct,
  stop,
} from "./harness.js";
import { percentile, round } from "./machine.js";

const TIMESTAMP = /"timestamp":"([^"]+)"/;
const BARE = fileURLToPath(new URL("./bare-server.ts", import.meta.url));

export interface ApiBenchResult {
  bids: BidsResult;
  bare: { per_second: number; p50_ms: number; p99_ms: number };
  stream: {
    clients: number;
    events_per_second: number;
    messages: number;
    p50_ms: number;
    p99_ms: number;
    max_ms: number;
  };
}

/** How many `bid.submitted` events the log holds from the last hour (the run is shorter). */
async function submittedBids(url: string): Promise<number> {
  const summary = await api<{ counts: Record<string, number> }>(
    `${url}/api/events/summary?minutes=60`,
    "GET",
    KEY,
  );
  return summary.counts["bid.submitted"] ?? 0;
}

export interface BidsResult {
  /** `bid.submitted` events the log gained during the run, per second. */
  written_per_second: number;
  /** 2xx answers per second: above written_per_second only if some requests changed nothing. */
  answered_per_second: number;
  refused: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  events_per_commit: number;
}

/**
 * Bids per second on a running product: 50 agents, 2,000 open auctions, 50 connections, each
 * request replacing a bid; counted as the `bid.submitted` events the log gained. `url` may be a
 * balancer in front of `replicaUrls`.
 */
export async function measureBids(url: string, seconds: number, replicaUrls: readonly string[] = [url]) {
  // Through a balancer, each replica counts its own commits: the figures are their sum.
  const metrics = async () => {
    const readers = await Promise.all(replicaUrls.map((replica) => readMetrics(replica)));
    return (name: string) => readers.reduce((sum, read) => sum + read(name), 0);
  };
  const agents = await registerAgents(url, 50, (i) => ({
    name: `bidder-${i}`,
    max_concurrent: 100,
  }));
  const tasks: string[] = [];
  for (let i = 0; i < 2000; i += 1) {
    tasks.push(
      (
        await api<{ task: { id: string } }>(`${url}/api/tasks`, "POST", KEY, {
          description: `auction ${i}`,
        })
      ).task.id,
    );
  }

  // (agent, task) pairs spread over the open auctions. A pair comes round again every 2,000
  // requests (agents and tasks both cycle through n mod 2,000), and its amount then differs
  // from the one it stands at, so every request replaces a bid.
  const submittedBefore = await submittedBids(url);
  const commitsBefore = await metrics();
  let n = 0;
  const bids = await run({
    url,
    connections: 50,
    duration: seconds,
    requests: [
      {
        method: "POST",
        setupRequest: (request) => {
          n += 1;
          const agent = agents[n % agents.length]!;
          const task = tasks[(n * 7919) % tasks.length]!;
          return {
            ...request,
            path: `/api/tasks/${task}/bids`,
            headers: { authorization: `Bearer ${agent.token}`, "content-type": "application/json" },
            body: JSON.stringify({ bid_sats: 1 + ((n + Math.floor(n / tasks.length)) % 100_000) }),
          };
        },
      },
    ],
  });
  const written = (await submittedBids(url)) - submittedBefore;
  const gauge = await metrics();
  const events =
    gauge("swarm_event_log_events_committed") - commitsBefore("swarm_event_log_events_committed");
  const commits = gauge("swarm_event_log_commits") - commitsBefore("swarm_event_log_commits");
  const result: BidsResult = {
    written_per_second: Math.round(written / seconds),
    answered_per_second: Math.round(bids["2xx"] / seconds),
    refused: bids.non2xx,
    p50_ms: bids.latency.p50,
    p99_ms: bids.latency.p99,
    errors: bids.errors,
    events_per_commit: round(events / Math.max(1, commits), 1),
  };
  return { result, agents };
}

/** `tool.called` reports on `tasks` (running, held by `token`'s agent) at `rate` a second, over 10 connections. */
export function reportTools(
  url: string,
  token: string,
  tasks: readonly string[],
  seconds: number,
  rate: number,
) {
  let m = 0;
  return run({
    url,
    connections: 10,
    duration: seconds,
    overallRate: rate,
    requests: [
      {
        method: "POST",
        setupRequest: (request) => {
          m += 1;
          return {
            ...request,
            path: `/api/tasks/${tasks[m % tasks.length]!}/tools`,
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify({ tool: "search", phase: "called", input: { n: m } }),
          };
        },
      },
    ],
  });
}

export async function benchApi(options: { seconds?: number } = {}): Promise<ApiBenchResult> {
  const seconds = options.seconds ?? 10;
  // No agent may time out while the bids and the bare ceiling are measured before the stream part.
  const server = await startProduct("api", {
    SWARM_AUCTION_MS: "600000",
    SWARM_HEARTBEAT_TIMEOUT_MS: "3600000",
  });
  try {
    const { result: bids, agents } = await measureBids(server.url, seconds);

    const bare = await start(BARE, {});
    const ceiling = await run({
      url: `${bare.url}/bare`,
      method: "POST",
      connections: 50,
      duration: seconds,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ bid_sats: 1 }),
    });
    await stop(bare);

    // Stream latency: 200 clients, ~1,000 events/s of tool calls from running tasks.
    const streamUrl = `${server.url.replace("http", "ws")}/api/stream?token=${KEY}`;
    const latencies: number[] = [];
    const clients = await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<WebSocket>((resolve, reject) => {
            const socket = new WebSocket(streamUrl);
            // 200 clients share this process with the load generator: read just the timestamp.
            socket.on("message", (data: Buffer) => {
              const stamp = TIMESTAMP.exec(data.toString());
              if (stamp?.[1] !== undefined) latencies.push(Date.now() - Date.parse(stamp[1]));
            });
            socket.once("open", () => resolve(socket));
            socket.once("error", reject);
          }),
      ),
    );
    const worker = agents[0]!;
    const runningTasks: string[] = [];
    for (let i = 0; i < 20; i += 1) {
      const { task } = await api<{ task: { id: string } }>(`${server.url}/api/tasks`, "POST", KEY, {
        description: `tool run ${i}`,
        auction_ms: 100,
      });
      await api(`${server.url}/api/tasks/${task.id}/bids`, "POST", worker.token, { bid_sats: 1 });
      runningTasks.push(task.id);
    }
    await new Promise((resolve) => setTimeout(resolve, 500)); // the short auctions close
    for (const id of runningTasks) await api(`${server.url}/api/tasks/${id}/start`, "POST", worker.token);
    latencies.length = 0;
    const producer = await reportTools(server.url, worker.token, runningTasks, seconds, 1000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const client of clients) client.close();
    const sorted = [...latencies].sort((a, b) => a - b);
    return {
      bids,
      bare: {
        per_second: Math.round(ceiling.requests.average),
        p50_ms: ceiling.latency.p50,
        p99_ms: ceiling.latency.p99,
      },
      stream: {
        clients: clients.length,
        events_per_second: Math.round(producer["2xx"] / seconds),
        messages: latencies.length,
        p50_ms: round(percentile(sorted, 50), 1),
        p99_ms: round(percentile(sorted, 99), 1),
        max_ms: sorted.at(-1) ?? 0,
      },
    };
  } finally {
    await server.close();
  }
}
