/**
 * Dashboard benchmark, against the real server in its own process over loopback: 200 live
 * overview pages while the swarm produces about 1,000 events a second (tool calls reported
 * through the API, as agents do). Measures, for every event, the time from its being stamped
 * (just before its commit) to the arrival of the first message that brings a page past its
 * seq (whether or not the capped feed shows its row); the messages each page receives per
 * second; and the server's memory over the run. An API stream client supplies each seq's
 * timestamp.
 */
import WebSocket from "ws";
import { api, BENCH_KEY as KEY, readMetrics, registerAgents, run, startProduct } from "./harness.js";
import { percentile, round } from "./machine.js";

/** The seq a message brings its page up to. */
const MARKER = /id="live-seq" data-seq="(\d+)"/;
const TIMESTAMP = /"seq":(\d+),[^]*?"timestamp":"([^"]+)"/;
const CLIENTS = 200;
/** Pages that parse every row for latency; the others only count what they receive. */
const PROBES = 10;
/** The server's bound: one message per 50 ms flush. */
export const MESSAGE_BOUND_PER_SECOND = 20;

export interface DashboardBenchResult {
  clients: number;
  seconds: number;
  events_per_second: number;
  /** Events timed, summed over the probe pages. */
  events_timed: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  messages_per_client_per_second: { mean: number; max: number };
  kib_per_client_per_second: number;
  memory: { minute: number; rss_mb: number; heap_mb: number }[];
}

async function serverMemory(url: string): Promise<{ rss_mb: number; heap_mb: number }> {
  const read = await readMetrics(url);
  return {
    rss_mb: round(read("process_resident_memory_bytes") / 2 ** 20, 1),
    heap_mb: round(read("nodejs_heap_size_used_bytes") / 2 ** 20, 1),
  };
}

export async function benchDashboard(options: { seconds?: number } = {}): Promise<DashboardBenchResult> {
  const seconds = options.seconds ?? 300;
  const server = await startProduct("dashboard", { SWARM_DASHBOARD_PUBLIC: "true", SWARM_AUCTION_MS: "100" });
  try {
    // A swarm at work: agents, tasks running, then tool calls at about 1,000 a second.
    const agents = await registerAgents(server.url, 20, (i) => ({
      name: `agent-${i}`,
      capabilities: ["search"],
      max_concurrent: 5,
    }));
    const running: { task: string; token: string }[] = [];
    for (let i = 0; i < 40; i += 1) {
      const { task } = await api<{ task: { id: string } }>(`${server.url}/api/tasks`, "POST", KEY, {
        description: `research question ${i}`,
        required_capabilities: ["search"],
      });
      const bidder = agents[i % agents.length]!;
      await api(`${server.url}/api/tasks/${task.id}/bids`, "POST", bidder.token, { bid_sats: 10 + i });
      running.push({ task: task.id, token: bidder.token });
    }
    await new Promise((resolve) => setTimeout(resolve, 500)); // the auctions close
    for (const { task, token } of running) await api(`${server.url}/api/tasks/${task}/start`, "POST", token);

    const liveUrl = `${server.url.replace("http", "ws")}/live?view=overview`;
    const stampOf = new Map<number, number>();
    const stream = new WebSocket(`${server.url.replace("http", "ws")}/api/stream?token=${KEY}`);
    stream.on("message", (data: Buffer) => {
      const match = TIMESTAMP.exec(data.toString());
      if (match !== null) stampOf.set(Number(match[1]), Date.parse(match[2]!));
    });
    await new Promise((resolve, reject) => {
      stream.once("open", resolve);
      stream.once("error", reject);
    });
    /** Per probe page: [arrival time, seqs after, seqs up to] for each message. */
    const arrivals: [number, number, number][][] = Array.from({ length: PROBES }, () => []);
    const counts = Array.from({ length: CLIENTS }, () => ({ messages: 0, bytes: 0 }));
    let measuring = false;
    const clients = await Promise.all(
      counts.map(
        (count, index) =>
          new Promise<WebSocket>((resolve, reject) => {
            const socket = new WebSocket(liveUrl);
            const probe = arrivals[index];
            let reached: number | undefined;
            socket.on("message", (data: Buffer) => {
              const received = Date.now();
              const marker = probe === undefined ? null : MARKER.exec(data.toString());
              const seq = marker === null || marker === undefined ? undefined : Number(marker[1]);
              if (measuring) {
                count.messages += 1;
                count.bytes += data.length;
                if (probe !== undefined && seq !== undefined && reached !== undefined && seq > reached) {
                  probe.push([received, reached, seq]);
                }
              }
              if (seq !== undefined) reached = Math.max(reached ?? 0, seq);
            });
            socket.once("open", () => resolve(socket));
            socket.once("error", reject);
          }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 1000)); // connect-time snapshots are done

    const seqAt = async () =>
      (await api<{ events: { seq: number }[] }>(`${server.url}/api/events?order=desc&limit=1`, "GET", KEY))
        .events[0]?.seq ?? 0;
    const firstSeq = await seqAt();
    const memory: DashboardBenchResult["memory"] = [];
    const startedAt = Date.now();
    const sampler = setInterval(
      () => {
        void serverMemory(server.url).then((sample) =>
          memory.push({ minute: round((Date.now() - startedAt) / 60_000, 1), ...sample }),
        );
      },
      Math.min(60_000, (seconds * 1000) / 5),
    );
    measuring = true;
    memory.push({ minute: 0, ...(await serverMemory(server.url)) });
    let n = 0;
    await run({
      url: server.url,
      connections: 10,
      duration: seconds,
      overallRate: 1000,
      requests: [
        {
          method: "POST",
          setupRequest: (request) => {
            n += 1;
            const { task, token } = running[n % running.length]!;
            return {
              ...request,
              path: `/api/tasks/${task}/tools`,
              headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
              body: JSON.stringify({ tool: "web.search", phase: "called", input: { query: `q${n}` } }),
            };
          },
        },
      ],
    });
    const elapsed = (Date.now() - startedAt) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 500));
    measuring = false;
    clearInterval(sampler);
    memory.push({ minute: round(elapsed / 60, 1), ...(await serverMemory(server.url)) });
    const lastSeq = await seqAt();
    for (const client of clients) client.close();
    stream.close();

    const latencies: number[] = [];
    for (const messages of arrivals) {
      for (const [received, after, upTo] of messages) {
        for (let seq = Math.max(after + 1, firstSeq + 1); seq <= upTo; seq += 1) {
          const stamped = stampOf.get(seq);
          if (stamped !== undefined) latencies.push(received - stamped);
        }
      }
    }
    const sorted = latencies.sort((a, b) => a - b);
    const rates = counts.map((count) => count.messages / elapsed);
    return {
      clients: CLIENTS,
      seconds: Math.round(elapsed),
      events_per_second: Math.round((lastSeq - firstSeq) / elapsed),
      events_timed: sorted.length,
      p50_ms: percentile(sorted, 50),
      p99_ms: percentile(sorted, 99),
      max_ms: sorted.at(-1) ?? 0,
      messages_per_client_per_second: {
        mean: round(rates.reduce((sum, rate) => sum + rate, 0) / rates.length, 1),
        max: round(Math.max(...rates), 1),
      },
      kib_per_client_per_second: round(
        counts.reduce((sum, count) => sum + count.bytes, 0) / counts.length / elapsed / 1024,
        1,
      ),
      memory,
    };
  } finally {
    await server.close();
  }
}
