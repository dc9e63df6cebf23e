/**
 * Reads that grow with the data, timed from outside against the product in its own process on
 * the seeded large database (bench/seed-large.ts): each request alone on an idle server, which
 * is about how long it holds the event loop (better-sqlite3 reads are synchronous), and an
 * agent's heartbeats while four clients repeat one read as fast as they can.
 *
 * `npx tsx bench/large-reads.ts [--db seeded.db]` seeds a fresh file when none is given; a given
 * file (made by `tsx bench/seed-large.ts --db`, with its landmarks beside it) is copied, never changed.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { api, BENCH_KEY, PRODUCT, start, stop } from "./harness.js";
import { percentile, round } from "./machine.js";
import { seedLarge, type SeedResult } from "./seed-large.js";

export interface TimedRead {
  name: string;
  path: string;
  status: number;
  bytes: number;
  median_ms: number;
  max_ms: number;
}

export interface LoadedHeartbeats {
  read: string;
  heartbeats: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

async function timed(url: string, headers: Record<string, string>, runs: number) {
  const times: number[] = [];
  let status = 0;
  let bytes = 0;
  for (let i = 0; i < runs; i += 1) {
    const started = performance.now();
    const response = await fetch(url, { headers });
    const body = await response.arrayBuffer();
    times.push(performance.now() - started);
    status = response.status;
    bytes = body.byteLength;
    // A read that takes seconds has made its point.
    if (times.reduce((sum, ms) => sum + ms, 0) > 5000) break;
  }
  times.sort((a, b) => a - b);
  return { status, bytes, median_ms: round(percentile(times, 50), 1), max_ms: round(times.at(-1) ?? 0, 1) };
}

/** A dashboard session for the operator: the cookies a browser holds after the login form. */
async function logIn(url: string): Promise<string> {
  const form = await fetch(`${url}/login`);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await form.text())?.[1] ?? "";
  const cookieOf = (response: Response) =>
    response.headers.getSetCookie().map((cookie) => cookie.split(";")[0] ?? "");
  const csrfCookie = cookieOf(form).join("; ");
  const login = await fetch(`${url}/login`, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", cookie: csrfCookie },
    body: new URLSearchParams({ _csrf: csrf, key: BENCH_KEY, next: "/" }).toString(),
  });
  if (login.status !== 303) throw new Error(`login failed: ${login.status} ${await login.text()}`);
  return [csrfCookie, ...cookieOf(login)].join("; ");
}

export async function benchLargeReads(options: { db?: string; runs?: number } = {}) {
  const runs = options.runs ?? 5;
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-large-"));
  const path = join(dir, "swarm.db");
  let seed: SeedResult;
  if (options.db === undefined) seed = seedLarge({ path });
  else {
    copyFileSync(options.db, path);
    seed = JSON.parse(readFileSync(`${options.db}.json`, "utf8")) as SeedResult;
  }
  const server = await start(PRODUCT, {
    SWARM_DB: path,
    SWARM_API_KEY: BENCH_KEY,
    SWARM_RATE_LIMIT: "0",
    SWARM_EXPENSIVE_RATE_LIMIT: "0",
    // Long enough that no agent of the seed times out while the figures are taken.
    SWARM_HEARTBEAT_TIMEOUT_MS: "3600000",
    LOG_LEVEL: "warn",
  });
  try {
    const operator = { authorization: `Bearer ${BENCH_KEY}` };
    const bigTask = seed.bigTaskId;
    const crowdedTask = seed.crowdedTaskId;
    const busyAgent = seed.busyAgentId;
    const { agent, token } = await api<{ agent: { id: string }; token: string }>(
      `${server.url}/api/agents`,
      "POST",
      BENCH_KEY,
      { name: "bench-heartbeat" },
    );
    const html = { cookie: await logIn(server.url), accept: "text/html" };
    const reads: [string, string, Record<string, string>][] = [
      ["metrics scrape", "/metrics", {}],
      ["health", "/healthz", {}],
      ["agents, first page", "/api/agents", operator],
      ["agents, deep page", "/api/agents?limit=200&cursor=9000", operator],
      ["agents, by status", "/api/agents?status=offline&cursor=9000", operator],
      ["one agent with stats", `/api/agents/${busyAgent}`, operator],
      ["tasks, first page", "/api/tasks", operator],
      ["tasks, deep cursor", "/api/tasks?cursor=500&limit=200", operator],
      ["tasks by status, deep cursor", "/api/tasks?status=completed&cursor=500&limit=200", operator],
      ["tasks by agent, deep cursor", `/api/tasks?agent_id=${busyAgent}&cursor=500&limit=200`, operator],
      [
        "tasks by status and agent, deep cursor",
        `/api/tasks?status=completed&agent_id=${busyAgent}&cursor=500&limit=200`,
        operator,
      ],
      ["timeline of the 100,000-event task", `/api/tasks/${bigTask}/events`, operator],
      ["timeline, a deep page of 1000", `/api/tasks/${bigTask}/events?after_seq=950000&limit=1000`, operator],
      ["timeline, an agent reading", `/api/tasks/${bigTask}/events`, { authorization: `Bearer ${token}` }],
      ["the crowded auction (10,000 bids)", `/api/tasks/${crowdedTask}`, operator],
      ["its bids, an agent reading", `/api/tasks/${crowdedTask}`, { authorization: `Bearer ${token}` }],
      ["its bids, a page", `/api/tasks/${crowdedTask}/bids?limit=200`, operator],
      ["page: overview", "/", html],
      ["page: agents", "/agents", html],
      ["page: tasks", "/tasks", html],
      ["page: tasks by status, deep", "/tasks?status=completed&before=500", html],
      ["page: the 100,000-event task", `/tasks/${bigTask}`, html],
      ["page: the crowded auction", `/tasks/${crowdedTask}`, html],
      ["page: the busy agent", `/agents/${busyAgent}`, html],
    ];
    const results: TimedRead[] = [];
    for (const [name, path, headers] of reads) {
      results.push({ name, path, ...(await timed(`${server.url}${path}`, headers, runs)) });
    }

    // An agent's heartbeats while four clients repeat a read back to back.
    const loaded: LoadedHeartbeats[] = [];
    for (const [read, headers] of [
      ["/metrics", {}],
      ["/api/agents", operator],
      [`/api/tasks/${bigTask}/events`, operator],
    ] as [string, Record<string, string>][]) {
      let running = true;
      const hammer = async () => {
        while (running) await (await fetch(`${server.url}${read}`, { headers })).arrayBuffer();
      };
      const hammers = [hammer(), hammer(), hammer(), hammer()];
      const beats: number[] = [];
      const until = performance.now() + 5000;
      while (performance.now() < until) {
        const started = performance.now();
        await api(`${server.url}/api/agents/${agent.id}/heartbeat`, "POST", token);
        beats.push(performance.now() - started);
      }
      running = false;
      await Promise.all(hammers);
      beats.sort((a, b) => a - b);
      loaded.push({
        read: read.replace(bigTask, ":big"),
        heartbeats: beats.length,
        p50_ms: round(percentile(beats, 50), 1),
        p99_ms: round(percentile(beats, 99), 1),
        max_ms: round(beats.at(-1) ?? 0, 1),
      });
    }
    return { seed, results, loaded };
  } finally {
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const at = process.argv.indexOf("--db");
  const { seed, results, loaded } = await benchLargeReads({ db: at > 0 ? process.argv[at + 1] : undefined });
  console.log(`seed: ${JSON.stringify(seed)}`);
  console.log("| read | status | bytes | median ms | max ms |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of results)
    console.log(`| ${r.name} | ${r.status} | ${r.bytes} | ${r.median_ms} | ${r.max_ms} |`);
  console.log();
  console.log("| four clients repeating | heartbeats | p50 ms | p99 ms | max ms |");
  console.log("|---|---:|---:|---:|---:|");
  for (const l of loaded)
    console.log(`| ${l.read} | ${l.heartbeats} | ${l.p50_ms} | ${l.p99_ms} | ${l.max_ms} |`);
}
