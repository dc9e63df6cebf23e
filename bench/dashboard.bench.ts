/**
 * Dashboard benchmark, against the real server in its own process over loopback: 200 live
 * overview pages while the swarm produces about 1,000 events a second (tool calls reported
 * through the API, as agents do). Measures the time from an event being stamped (just before
 * its commit) to its row arriving at a page, the messages each page receives per second, and
 * the server's memory over the run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { api, run, start, stop } from "./harness.js";
import { percentile, round } from "./machine.js";

const KEY = "bench-operator-key-0123456789abcdef";
const SERVER = fileURLToPath(new URL("../src/server.ts", import.meta.url));
/** A feed row's seq and the time its event was stamped. */
const ROW = /<li id="ev-(\d+)"[^>]*>\s*<span class="when"><time datetime="([^"]+)"/g;
const CLIENTS = 200;
/** Pages that parse every row for latency; the others only count what they receive. */
const PROBES = 10;
/** The server's bound: one message per 50 ms flush. */
export const MESSAGE_BOUND_PER_SECOND = 20;

export interface DashboardBenchResult {
  clients: number;
  seconds: number;
  events_per_second: number;
  rows_timed: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  messages_per_client_per_second: { mean: number; max: number };
  kib_per_client_per_second: number;
  memory: { minute: number; rss_mb: number; heap_mb: number }[];
}

async function serverMemory(url: string): Promise<{ rss_mb: number; heap_mb: number }> {
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? NaN);
  return {
    rss_mb: round(read("process_resident_memory_bytes") / 2 ** 20, 1),
    heap_mb: round(read("nodejs_heap_size_used_bytes") / 2 ** 20, 1),
  };
}

export async function benchDashboard(options: { seconds?: number } = {}): Promise<DashboardBenchResult> {
  const seconds = options.seconds ?? 300;
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-dashboard-"));
  const server = await start(SERVER, {
    SWARM_DB: join(dir, "swarm.db"),
    SWARM_API_KEY: KEY,
    SWARM_DASHBOARD_PUBLIC: "true",
    SWARM_RATE_LIMIT: "0",
    SWARM_AUCTION_MS: "100",
    LOG_LEVEL: "warn",
  });
  try {
    // A swarm at work: agents, tasks running, then tool calls at about 1,000 a second.
    const agents: { id: string; token: string }[] = [];
    for (let i = 0; i < 20; i += 1) {
      const { agent, token } = await api<{ agent: { id: string }; token: string }>(
        `${server.url}/api/agents`,
        "POST",
        KEY,
        { name: `agent-${i}`, capabilities: ["search"], max_concurrent: 5 },
      );
      agents.push({ id: agent.id, token });
    }
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
    const latencies: number[] = [];
    const counts = Array.from({ length: CLIENTS }, () => ({ messages: 0, bytes: 0 }));
    let measuring = false;
    const clients = await Promise.all(
      counts.map(
        (count, index) =>
          new Promise<WebSocket>((resolve, reject) => {
            const socket = new WebSocket(liveUrl);
            const probe = index < PROBES;
            socket.on("message", (data: Buffer) => {
              if (!measuring) return;
              const received = Date.now();
              count.messages += 1;
              count.bytes += data.length;
              if (!probe) return;
              for (const match of data.toString().matchAll(ROW)) {
                latencies.push(received - Date.parse(match[2]!));
              }
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

    const sorted = [...latencies].sort((a, b) => a - b);
    const rates = counts.map((count) => count.messages / elapsed);
    return {
      clients: CLIENTS,
      seconds: Math.round(elapsed),
      events_per_second: Math.round((lastSeq - firstSeq) / elapsed),
      rows_timed: sorted.length,
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
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  }
}
