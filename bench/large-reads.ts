/**
 * Reads that grow with the data, on the seeded large database (bench/seed-large.ts):
 * - from outside, against the product in its own process: each read's answer time, the longest
 *   the server's event loop was held meanwhile (prom-client's monitorEventLoopDelay, read from
 *   /metrics), and an agent's heartbeats while four clients repeat one read as fast as they can;
 * - in this process, through `app.inject`: the CPU time of each read, which is what it holds the
 *   event loop for (better-sqlite3 reads are synchronous) however loaded the machine is.
 *
 * `npx tsx bench/large-reads.ts [--db seeded.db] [--cpu-only]` seeds a fresh file when none is
 * given; a given file (made by `tsx bench/seed-large.ts --db`, with its landmarks beside it) is
 * copied, never changed, and also measured in process.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import WebSocket from "ws";
import { Coordinator } from "../src/coordinator/coordinator.js";
import { createEventLog } from "../src/event-log/index.js";
import { buildApp } from "../src/web/app.js";
import { api, BENCH_KEY, PRODUCT, readMetrics, start, stop, waitForSearchIndex } from "./harness.js";
import { percentile, round } from "./machine.js";
import { seedLarge, type SeedResult } from "./seed-large.js";

export interface TimedRead {
  name: string;
  path: string;
  status: number;
  bytes: number;
  median_ms: number;
  max_ms: number;
  /** The longest the event loop was held while the read was repeated (after a first answer). */
  loop_held_ms: number;
  /** The same for the first answer of its kind after start (templates compile, statements prepare). */
  first_loop_held_ms: number;
}

export interface LoadedHeartbeats {
  read: string;
  heartbeats: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/**
 * The longest the server's event loop was held since the scrape before, from prom-client's
 * monitorEventLoopDelay (reset at each scrape): what a read costs everyone else, which its own
 * answer time on a shared machine only bounds from above.
 */
async function loopHeldMs(base: string): Promise<number> {
  const read = await readMetrics(base);
  return round(read("nodejs_eventloop_lag_max_seconds") * 1000, 1);
}

async function timed(base: string, url: string, headers: Record<string, string>, runs: number) {
  await loopHeldMs(base);
  // The first answer of a kind after start also compiles its template and prepares its
  // statements: a one-time hold, kept apart from the steady cost.
  await (await fetch(url, { headers })).arrayBuffer();
  const firstHeld = await loopHeldMs(base);
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
  const held = await loopHeldMs(base);
  times.sort((a, b) => a - b);
  return {
    status,
    bytes,
    median_ms: round(percentile(times, 50), 1),
    max_ms: round(times.at(-1) ?? 0, 1),
    loop_held_ms: held,
    first_loop_held_ms: firstHeld,
  };
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

/** A word in two events of the seed (a task's description and its result), and one in none. */
const RARE = "#77777";
const NO_MATCH = "zebra-quokka";

/**
 * Wait for the server's text-search index to hold every event (its worker builds it after a
 * start on an unindexed file); returns the seconds it took. Searches before that scan the rest.
 */
async function searchIndexCaughtUp(base: string): Promise<number> {
  const started = performance.now();
  for (;;) {
    const health = (await (await fetch(`${base}/healthz`)).json()) as {
      latest_seq: number;
      search_indexed_through?: number;
    };
    if (health.search_indexed_through === undefined) throw new Error("the server has no search index");
    if (health.search_indexed_through >= health.latest_seq)
      return round((performance.now() - started) / 1000, 1);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** A live page's socket opened `runs` times: the time to its first message, the catch-up. */
async function timedCatchUp(base: string, path: string, cookie: string, runs: number) {
  await loopHeldMs(base);
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < runs; i += 1) {
    const started = performance.now();
    const socket = new WebSocket(`${base.replace("http", "ws")}${path}`, { headers: { cookie } });
    bytes = await new Promise<number>((resolve, reject) => {
      socket.once("message", (data: Buffer) => resolve(data.byteLength));
      socket.once("close", (code, reason) => reject(new Error(`live closed ${code} ${reason.toString()}`)));
      socket.once("error", reject);
    });
    times.push(performance.now() - started);
    socket.removeAllListeners("close");
    socket.close();
  }
  const held = await loopHeldMs(base);
  times.sort((a, b) => a - b);
  return {
    status: 101,
    bytes,
    median_ms: round(percentile(times, 50), 1),
    max_ms: round(times.at(-1) ?? 0, 1),
    loop_held_ms: held,
    first_loop_held_ms: held,
  };
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
    const indexSeconds = await searchIndexCaughtUp(server.url);
    const reads: [string, string, Record<string, string>][] = [
      [`text search, rare word (${RARE})`, `/api/events?q=${encodeURIComponent(RARE)}`, operator],
      [
        "text search, no match, limit 1000",
        `/api/events?q=${encodeURIComponent(NO_MATCH)}&limit=1000`,
        operator,
      ],
      ["text search, a word in many events, newest 100", `/api/events?q=benchmark&order=desc`, operator],
      ["summary, 30 days", "/api/events/summary?minutes=43200", operator],
      ["summary, one day", "/api/events/summary?minutes=1440", operator],
      ["export with a text search", `/api/events/export?q=${encodeURIComponent(RARE)}`, operator],
      ["export of one type over the week (100,000 rows)", "/api/events/export?type=task.created", operator],
      ["page: events, text search", `/events?q=${encodeURIComponent(RARE)}`, html],
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
      results.push({ name, path, ...(await timed(server.url, `${server.url}${path}`, headers, runs)) });
    }
    results.push({
      name: "live events page searching, catch-up from seq 0",
      path: `/live?view=events&q=${RARE}&after_seq=0`,
      ...(await timedCatchUp(
        server.url,
        `/live?view=events&q=${encodeURIComponent(RARE)}&after_seq=0`,
        html.cookie,
        runs,
      )),
    });

    // An agent's heartbeats while four clients repeat a read back to back.
    const loaded: LoadedHeartbeats[] = [];
    for (const [read, headers] of [
      ["/metrics", {}],
      ["/api/agents", operator],
      [`/api/tasks/${bigTask}/events`, operator],
      [`/api/events?q=${encodeURIComponent(NO_MATCH)}&limit=1000`, operator],
      ["/api/events/summary?minutes=43200", operator],
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
    return { seed, results, loaded, index_seconds: indexSeconds };
  } finally {
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface CpuPerRead {
  name: string;
  bytes: number;
  median_ms: number;
  max_ms: number;
}

/**
 * The same reads in this process, through `app.inject`, as CPU time: what each costs the event
 * loop however busy the machine is (an answer's time on a loaded machine is mostly waiting for a
 * core). The app is built as the server builds it, keyless, so every read is the operator's but
 * the one an agent makes.
 */
export async function cpuPerRead(options: {
  db: string;
  seed: SeedResult;
  runs?: number;
}): Promise<CpuPerRead[]> {
  const runs = options.runs ?? 7;
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-large-"));
  const path = join(dir, "swarm.db");
  copyFileSync(options.db, path);
  const logger = pino({ level: "silent" });
  const eventLog = createEventLog({ path, logger });
  const coordinator = new Coordinator({ eventLog, logger, rules: { heartbeatTimeoutMs: 3_600_000 } });
  coordinator.start();
  const app = await buildApp({
    eventLog,
    coordinator,
    logger,
    apiKey: undefined,
    rateLimitPerMinute: false,
    expensiveRateLimitPerMinute: false,
    defaultMetrics: true,
  });
  try {
    // process.cpuUsage counts every thread: let the search worker finish indexing first.
    await waitForSearchIndex(eventLog);
    const { bigTaskId: big, crowdedTaskId: crowded, busyAgentId: busy } = options.seed;
    const agent = (
      await app.inject({ method: "POST", url: "/api/agents", payload: { name: "bench-reader" } })
    ).json<{ token: string }>();
    const asAgent = { authorization: `Bearer ${agent.token}` };
    const reads: [string, string, Record<string, string>][] = [
      ["metrics scrape", "/metrics", {}],
      ["agents, first page", "/api/agents", {}],
      ["agents, deep page of 200", "/api/agents?limit=200&cursor=9000", {}],
      ["one agent with stats", `/api/agents/${busy}`, {}],
      [
        "tasks by status and agent, deep",
        `/api/tasks?status=completed&agent_id=${busy}&cursor=500&limit=200`,
        {},
      ],
      ["timeline, first page", `/api/tasks/${big}/events`, {}],
      ["timeline, a deep page of 1000", `/api/tasks/${big}/events?after_seq=950000&limit=1000`, {}],
      ["timeline, an agent reading", `/api/tasks/${big}/events`, asAgent],
      ["the crowded auction", `/api/tasks/${crowded}`, {}],
      ["the crowded auction, an agent", `/api/tasks/${crowded}`, asAgent],
      ["page: overview", "/", {}],
      ["page: agents", "/agents", {}],
      ["page: the 100,000-event task", `/tasks/${big}`, {}],
      ["page: the crowded auction", `/tasks/${crowded}`, {}],
      ["page: the busy agent", `/agents/${busy}`, {}],
    ];
    const results: CpuPerRead[] = [];
    for (const [name, url, headers] of reads) {
      const cpu: number[] = [];
      let bytes = 0;
      for (let i = 0; i <= runs; i += 1) {
        const before = process.cpuUsage();
        const response = await app.inject({ url, headers: { accept: "text/html", ...headers } });
        const used = process.cpuUsage(before);
        bytes = response.rawPayload.byteLength;
        // The first run warms caches and compiles templates.
        if (i > 0) cpu.push((used.user + used.system) / 1000);
        if (cpu.reduce((sum, ms) => sum + ms, 0) > 5000) break;
      }
      cpu.sort((a, b) => a - b);
      results.push({
        name,
        bytes,
        median_ms: round(percentile(cpu, 50), 1),
        max_ms: round(cpu.at(-1) ?? 0, 1),
      });
    }
    return results;
  } finally {
    await app.close();
    coordinator.stop();
    eventLog.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const at = process.argv.indexOf("--db");
  const db = at > 0 ? process.argv[at + 1] : undefined;
  // --cpu-only: the in-process figures alone, for a given file.
  if (!process.argv.includes("--cpu-only")) {
    const { seed, results, loaded, index_seconds } = await benchLargeReads({ db });
    console.log(`seed: ${JSON.stringify(seed)}; search index built in ${index_seconds} s`);
    console.log("| read | status | bytes | answer median ms | answer max ms | event loop held, max ms |");
    console.log("|---|---:|---:|---:|---:|---:|");
    for (const r of results)
      console.log(
        `| ${r.name} | ${r.status} | ${r.bytes} | ${r.median_ms} | ${r.max_ms} | ${r.loop_held_ms} |`,
      );
    console.log();
    console.log("| four clients repeating | heartbeats | p50 ms | p99 ms | max ms |");
    console.log("|---|---:|---:|---:|---:|");
    for (const l of loaded)
      console.log(`| ${l.read} | ${l.heartbeats} | ${l.p50_ms} | ${l.p99_ms} | ${l.max_ms} |`);
  }
  if (db !== undefined) {
    const seed = JSON.parse(readFileSync(`${db}.json`, "utf8")) as SeedResult;
    console.log();
    console.log("| in process | bytes | CPU median ms | CPU max ms |");
    console.log("|---|---:|---:|---:|");
    for (const c of await cpuPerRead({ db, seed }))
      console.log(`| ${c.name} | ${c.bytes} | ${c.median_ms} | ${c.max_ms} |`);
  }
}
