/**
 * `npm run bench`: runs every benchmark on this machine and prints the figures as Markdown,
 * also written to bench/last-run.md, for BENCHMARKS.md. Options: --quick (small sizes, to
 * check the script itself); --only api,dashboard (just those sections, printed and not written:
 * event-log, coordinator, api, dashboard, large-reads, postgres, cluster).
 */
import { pathToFileURL } from "node:url";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchApi } from "./api.bench.js";
import { benchCluster } from "./cluster.bench.js";
import { benchCoordinator, benchFinishedWorkPrune, pureCore } from "./coordinator.bench.js";
import { benchDashboard, MESSAGE_BOUND_PER_SECOND } from "./dashboard.bench.js";
import { benchEventLog } from "./event-log.bench.js";
import { benchLargeReads, cpuPerRead } from "./large-reads.js";
import { benchPostgres } from "./postgres.bench.js";
import { seedLarge } from "./seed-large.js";
import { describeMachine, round } from "./machine.js";

const quick = process.argv.includes("--quick");
const onlyAt = process.argv.indexOf("--only");
/** Sections named after --only (comma-separated), or every section. */
const only = onlyAt === -1 ? undefined : new Set((process.argv[onlyAt + 1] ?? "").split(","));
const SECTIONS = ["event-log", "coordinator", "api", "dashboard", "large-reads", "postgres", "cluster"];
for (const name of only ?? []) {
  if (!SECTIONS.includes(name))
    throw new Error(`--only: no section ${name}; sections: ${SECTIONS.join(", ")}`);
}
const wanted = (section: string) => only === undefined || only.has(section);
const lines: string[] = [];
const say = (line = "") => {
  lines.push(line);
  console.log(line);
};

say(`## Run of ${new Date().toISOString().slice(0, 10)}${quick ? " (quick)" : ""}`);
say();
say(`Machine: ${describeMachine()}`);
say();

const ratio = (value: number, raw: number) => `${round(value / raw, 2)}×`;
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");

if (wanted("event-log")) {
  const e = await benchEventLog(quick ? { rows: 50_000, writes: 10_000 } : {});
  say("### Event log writes (events/s)");
  say();
  say("| measure | synchronous=NORMAL (default) | vs raw | synchronous=FULL | vs raw |");
  say("|---|---:|---:|---:|---:|");
  const row = (label: string, normal: number, normalBase: number, full: number, fullBase: number) =>
    say(`| ${label} | ${normal} | ${ratio(normal, normalBase)} | ${full} | ${ratio(full, fullBase)} |`);
  row(
    "raw limit: prepared INSERTs, 1,000-row transactions",
    e.raw_normal,
    e.raw_normal,
    e.raw_full,
    e.raw_full,
  );
  row(
    "raw INSERTs, 100-row transactions (the most 100 waiting callers can fill)",
    e.raw100_normal,
    e.raw_normal,
    e.raw100_full,
    e.raw_full,
  );
  row(
    "raw INSERTs, one row per transaction (the floor for a lone caller)",
    e.raw1_normal,
    e.raw_normal,
    e.raw1_full,
    e.raw_full,
  );
  row(
    "`logEvent`, one caller awaiting each",
    e.sequential_normal,
    e.raw_normal,
    e.sequential_full,
    e.raw_full,
  );
  row(
    "`logEvent`, 100 concurrent callers (group commit)",
    e.concurrent_normal,
    e.raw_normal,
    e.concurrent_full,
    e.raw_full,
  );
  say(
    `| one caller vs raw one-row transactions | | ${ratio(e.sequential_normal, e.raw1_normal)} | | ${ratio(e.sequential_full, e.raw1_full)} |`,
  );
  say(
    `| group commit vs raw 100-row transactions | | ${ratio(e.concurrent_normal, e.raw100_normal)} | | ${ratio(e.concurrent_full, e.raw100_full)} |`,
  );
  say();
  say(
    `Group commit averaged ${e.concurrent_full_events_per_commit} events per transaction with 100 callers.`,
  );
  say();
  say(
    `### Event log reads and retention, on a ${e.table_rows.toLocaleString("en")}-event table (30 days of history)`,
  );
  say();
  say("| measure | p50 ms | p99 ms | target | verdict |");
  say("|---|---:|---:|---|---|");
  say(
    `| \`getTaskEvents\` (${e.task_events.events_per_task} events per task) | ${e.task_events.p50} | ${e.task_events.p99} | p99 ≤ 2 ms | ${verdict(e.task_events.p99 <= 2)} |`,
  );
  say(
    `| \`getEventSummary(60)\` (${e.summary_60.rows_in_window} rows in window) | ${e.summary_60.p50} | ${e.summary_60.p99} | ≤ 20 ms | ${verdict(e.summary_60.p99 <= 20)} |`,
  );
  say(
    `| \`getEventSummary(1440)\` (${e.summary_24h.rows_in_window} rows in window) | ${e.summary_24h.p50} | ${e.summary_24h.p99} | — | — |`,
  );
  say(
    `| \`getEventSummary(43200)\`, 30 days from the hourly rollup (${e.summary_30d.rows_in_window} rows in window) | ${e.summary_30d.p50} | ${e.summary_30d.p99} | — | — |`,
  );
  say(
    `| the same 30 days scanned from the time index, same run | ${e.summary_30d_scan.p50} | ${e.summary_30d_scan.p99} | — | ${ratio(e.summary_30d_scan.p50, e.summary_30d.p50)} slower |`,
  );
  const s = e.search;
  say(
    `| text search, rare word (${s.rare.matches} matches), trigram index | ${s.rare.p50} | ${s.rare.p99} | ≤ 20 ms | ${verdict(s.rare.p99 <= 20)} |`,
  );
  say(
    `| the same search as a scan (LIKE over every row), same run | ${s.rare_scan.p50} | ${s.rare_scan.p99} | — | ${ratio(s.rare_scan.p50, s.rare.p50)} slower |`,
  );
  say(
    `| text search, no match, limit 1,000, trigram index | ${s.no_match_1000.p50} | ${s.no_match_1000.p99} | — | — |`,
  );
  say(
    `| the same as a scan, same run | ${s.no_match_1000_scan.p50} | ${s.no_match_1000_scan.p99} | — | ${ratio(s.no_match_1000_scan.p50, s.no_match_1000.p50)} slower |`,
  );
  say(
    `| text search matching every event, newest 100, trigram index | ${s.common_100.p50} | ${s.common_100.p99} | — | — |`,
  );
  say();
  say(
    `The index of ${e.table_rows.toLocaleString("en")} events was built by its worker within ${s.index_build_seconds} s of opening the log (while the reads above ran). ` +
      `Searches the server runs (\`listEventsAsync\`, on the worker), alternating a word in every event and a rare one, limit 1,000: ` +
      `p50 ${s.async_common_p50} ms, longest event-loop block meanwhile ${s.async_max_event_loop_block_ms} ms (target ≤ 50 ms: ${verdict(s.async_max_event_loop_block_ms <= 50)}).`,
  );
  say();
  const p = e.prune;
  say(
    `Prune of ${p.deleted.toLocaleString("en")} rows: ${p.seconds} s in ${p.chunks} delete chunks; longest delete chunk ${p.longest_delete_ms} ms, longest vacuum step ${p.longest_vacuum_ms} ms; ` +
      `longest event-loop block seen ${p.max_event_loop_block_ms} ms (target ≤ 50 ms: ${verdict(p.max_event_loop_block_ms <= 50)}); ` +
      `file ${p.file_mb_before} MB → ${p.file_mb_after} MB.`,
  );
  say();
  say(
    `Targets: group-committed ≥ 0.8× the 1,000-row raw limit: ${verdict(e.concurrent_normal / e.raw_normal >= 0.8)} (NORMAL), ` +
      `${verdict(e.concurrent_full / e.raw_full >= 0.8)} (FULL); ≥ 0.8× raw at the same transaction size: ` +
      `${verdict(e.concurrent_normal / e.raw100_normal >= 0.8)} (NORMAL), ${verdict(e.concurrent_full / e.raw100_full >= 0.8)} (FULL); ` +
      `sequential ≥ 5,000/s: ${verdict(e.sequential_normal >= 5000)} (NORMAL), ${verdict(e.sequential_full >= 5000)} (FULL).`,
  );
}

if (wanted("coordinator")) {
  const c = benchCoordinator(quick ? { tasks: 500 } : {});
  say();
  say("### Coordinator (synchronous=NORMAL)");
  say();
  say("| measure | per second |");
  say("|---|---:|");
  say(
    `| pure core: decisions (post, 5 bids, close, start, complete; no I/O) | ${c.pure.decisionsPerSecond} |`,
  );
  say(`| pure core: whole task lifecycles | ${c.pure.lifecyclesPerSecond} |`);
  say(
    `| persisted: commands, each its own transaction (state rows + events) | ${c.persisted.commandsPerSecond} |`,
  );
  say(
    `| persisted: whole task lifecycles (${c.persisted.eventsPerLifecycle} events each) | ${c.persisted.lifecyclesPerSecond} |`,
  );
  say(`| persisted: events written by those commands | ${c.persisted.eventsPerSecond} |`);
  say(`| raw event-log limit, same run (1,000-row transactions) | ${c.raw_event_inserts_per_second} |`);
  say(
    `| raw single-row commits, same run (one commit per command is the floor) | ${c.raw_single_row_commits_per_second} |`,
  );
  say();
  say(
    `Persisted commands run at ${round(c.persisted.commandsPerSecond / c.raw_single_row_commits_per_second, 2)}× the single-row commit rate ` +
      `(each command is one transaction writing its state rows and events together).`,
  );

  // SWARM_BENCH_BASELINE=<another checkout>: its pure core beside this one's, rounds alternated in
  // one process, so that the ratio holds whatever the machine's speed that day.
  const baseline = process.env.SWARM_BENCH_BASELINE;
  if (baseline !== undefined && baseline !== "") {
    const theirs = (await import(pathToFileURL(`${baseline}/bench/coordinator.bench.ts`).href)) as {
      pureCore: typeof pureCore;
    };
    const lifecycles = quick ? 2000 : 20_000;
    say();
    say(`#### Pure core beside ${baseline} (rounds alternated, ${lifecycles} task lifecycles each)`);
    say();
    say("| round | baseline decisions/s | this code decisions/s | this ÷ baseline |");
    say("|---|---:|---:|---:|");
    const ratios: number[] = [];
    for (let round = 1; round <= 5; round += 1) {
      const before = theirs.pureCore(lifecycles).decisionsPerSecond;
      const now = pureCore(lifecycles).decisionsPerSecond;
      ratios.push(now / before);
      say(`| ${round} | ${before} | ${now} | ${(now / before).toFixed(2)}× |`);
    }
    const sorted = [...ratios].sort((a, b) => a - b);
    say();
    say(`Median ratio ${(sorted[2] as number).toFixed(2)}× (goal: at least 0.8×).`);
  }

  const f = await benchFinishedWorkPrune(quick ? { tasks: 20_000 } : {});
  say();
  say(
    `Retention of finished work: ${f.tasks.toLocaleString("en")} tasks with ${f.bids.toLocaleString("en")} bids, ` +
      `${f.idempotency_keys.toLocaleString("en")} Idempotency-Keys and ${f.agents.toLocaleString("en")} agents that left, ` +
      `pruned in ${f.seconds} s and ${f.chunks} chunks; longest delete chunk ${f.longest_delete_ms} ms; ` +
      `longest event-loop block seen ${f.max_event_loop_block_ms} ms (target ≤ 50 ms: ${verdict(f.max_event_loop_block_ms <= 50)}).`,
  );
}

if (wanted("api")) {
  const a = await benchApi(quick ? { seconds: 3 } : {});
  say();
  say("### REST and stream API (server in its own process, load from this one, loopback)");
  say();
  say("| measure | per second | p50 ms | p99 ms | target | verdict |");
  say("|---|---:|---:|---:|---|---|");
  say(
    `| bids written (\`bid.submitted\` events the log gained), 50 connections over 2,000 open auctions (${a.bids.answered_per_second}/s answered 2xx, ${a.bids.refused} refused, ${a.bids.errors} errors; ${a.bids.events_per_commit} events per commit) | ${a.bids.written_per_second} | ${a.bids.p50_ms} | ${a.bids.p99_ms} | ≥ 5,000/s, p99 ≤ 25 ms | ${verdict(a.bids.written_per_second >= 5000 && a.bids.p99_ms <= 25)} |`,
  );
  say(
    `| bare Fastify route, same machine, same load (the ceiling) | ${a.bare.per_second} | ${a.bare.p50_ms} | ${a.bare.p99_ms} | — | — |`,
  );
  say(
    `| event to stream client, ${a.stream.clients} clients, 1,000 events/s offered, ${a.stream.events_per_second}/s accepted (${a.stream.messages} messages) | — | ${a.stream.p50_ms} | ${a.stream.p99_ms} | p99 ≤ 50 ms at 1,000 events/s | ${verdict(a.stream.p99_ms <= 50 && a.stream.events_per_second >= 950)} |`,
  );
}

if (wanted("dashboard")) {
  const d = await benchDashboard(quick ? { seconds: 10 } : {});
  const first = d.memory[0];
  const settled = d.memory.find((sample) => sample.minute >= 1) ?? first;
  const last = d.memory.at(-1);
  // Flat: after the first minute's warm-up, heap ends within 20 % of where it stood.
  const flat =
    settled !== undefined &&
    last !== undefined &&
    last.heap_mb <= settled.heap_mb * 1.2 &&
    last.rss_mb <= settled.rss_mb * 1.2;
  say();
  say(
    `### Live dashboard (${d.clients} overview pages over websockets, ${d.events_per_second} events/s for ${d.seconds} s, server in its own process)`,
  );
  say();
  say("| measure | value | target | verdict |");
  say("|---|---:|---|---|");
  say(
    `| event stamped → first message that brings a page past it, p50 / p99 / max (${d.events_timed.toLocaleString("en")} events timed on 10 pages) | ${d.p50_ms} / ${d.p99_ms} / ${d.max_ms} ms | p99 ≤ 100 ms | ${verdict(d.p99_ms <= 100 && d.events_per_second >= 950)} |`,
  );
  say(
    `| messages per page per second, mean / max | ${d.messages_per_client_per_second.mean} / ${d.messages_per_client_per_second.max} | ≤ ${MESSAGE_BOUND_PER_SECOND} (one per 50 ms batch) | ${verdict(d.messages_per_client_per_second.max <= MESSAGE_BOUND_PER_SECOND)} |`,
  );
  say(`| bytes per page per second | ${d.kib_per_client_per_second} KiB | — | — |`);
  say(
    `| server memory, RSS / heap (MB) by minute | ${d.memory.map((m) => `${m.minute}: ${m.rss_mb} / ${m.heap_mb}`).join("; ")} | flat after warm-up | ${verdict(flat)} |`,
  );
}

if (wanted("large-reads")) {
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-seed-"));
  try {
    const db = join(dir, "large.db");
    const seed = seedLarge(
      quick
        ? { path: db, agents: 1000, tasks: 10_000, events: 100_000, bigTaskEvents: 10_000, crowdedBids: 1000 }
        : { path: db },
    );
    writeFileSync(`${db}.json`, JSON.stringify(seed));
    const large = await benchLargeReads({ db, runs: quick ? 2 : 5 });
    const worst = Math.max(...large.results.map((read) => read.loop_held_ms));
    const worstFirst = Math.max(...large.results.map((read) => read.first_loop_held_ms));
    say();
    say(
      `### Reads on a large log (${seed.events.toLocaleString("en")} events, ${seed.agents.toLocaleString("en")} agents, ` +
        `${seed.tasks.toLocaleString("en")} tasks; server in its own process)`,
    );
    say();
    say(
      `Seeded in ${round(seed.ms / 1000, 1)} s; the server's worker indexed it for text search in ${large.index_seconds} s after start. ` +
        "Each read answered once, then repeated up to 5 times; *event loop held* is the longest the server's event loop was " +
        "blocked while it was repeated (prom-client's monitorEventLoopDelay, read from /metrics), and the last column the same " +
        "for the first answer of its kind after start, which also compiles its template and prepares its statements.",
    );
    say();
    say(
      "| read | status | bytes | answer median ms | answer max ms | event loop held, max ms | first after start: loop held ms |",
    );
    say("|---|---:|---:|---:|---:|---:|---:|");
    for (const r of large.results) {
      say(
        `| ${r.name} | ${r.status} | ${r.bytes.toLocaleString("en")} | ${r.median_ms} | ${r.max_ms} | ${r.loop_held_ms} | ${r.first_loop_held_ms} |`,
      );
    }
    say();
    say(
      `Longest hold over every read, repeated: ${worst} ms (target ≤ 50 ms: ${verdict(worst <= 50)}); ` +
        `the first answer of a kind after start: up to ${worstFirst} ms.`,
    );
    say();
    say(
      "| four clients repeating this read back to back | an agent's heartbeats | p50 ms | p99 ms | max ms |",
    );
    say("|---|---:|---:|---:|---:|");
    for (const l of large.loaded)
      say(`| \`${l.read}\` | ${l.heartbeats} | ${l.p50_ms} | ${l.p99_ms} | ${l.max_ms} |`);
    const cpu = await cpuPerRead({ db, seed, runs: quick ? 2 : 7 });
    say();
    say(
      "CPU time of the synchronous reads, in this process through `app.inject` (what each holds the event loop for, however loaded the machine):",
    );
    say();
    say("| read | bytes | CPU median ms | CPU max ms |");
    say("|---|---:|---:|---:|");
    for (const c of cpu)
      say(`| ${c.name} | ${c.bytes.toLocaleString("en")} | ${c.median_ms} | ${c.max_ms} |`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (wanted("postgres")) {
  const p = await benchPostgres(
    quick ? { sequentialRows: 300, concurrentRows: 5000, tableRows: 50_000, bidSeconds: 3 } : {},
  );
  say("### The server on PostgreSQL beside SQLite (bids/s)");
  say();
  say(
    "The same load on each engine, one after the other in this run: 50 agents, 2,000 open auctions, 50 connections, every request replacing a bid; bids counted as the `bid.submitted` events the log gained.",
  );
  say();
  say("| engine | bids written/s | ÷ SQLite | p50 ms | p99 ms | events per commit | refused | errors |");
  say("|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const [engine, b] of [
    ["SQLite", p.bids.sqlite],
    ["PostgreSQL", p.bids.postgres],
  ] as const) {
    say(
      `| ${engine} | ${b.written_per_second} | ${ratio(b.written_per_second, p.bids.sqlite.written_per_second)} | ${b.p50_ms} | ${b.p99_ms} | ${b.events_per_commit} | ${b.refused} | ${b.errors} |`,
    );
  }
  say();
  say("### The event log on PostgreSQL (events/s)");
  say();
  say(`Server: ${p.server}. Each measure on a fresh database with the product's schema and indexes.`);
  say();
  say("| measure | events/s | module API ÷ raw | goal |");
  say("|---|---:|---:|---|");
  say(`| raw INSERT, one row per statement (its own commit) | ${p.raw1} | | |`);
  say(
    `| \`logEvent\`, one caller awaiting each | ${p.sequential} | ${ratio(p.sequential, p.raw1)} | ≥ 0.8×: ${verdict(p.sequential / p.raw1 >= 0.8)} |`,
  );
  say(`| raw multi-row INSERT, 100 rows per statement | ${p.raw100} | | |`);
  say(
    `| \`logEvent\`, 100 concurrent callers (group commit, ${p.concurrent_events_per_commit} events per commit) | ${p.concurrent} | ${ratio(p.concurrent, p.raw100)} | ≥ 0.8×: ${verdict(p.concurrent / p.raw100 >= 0.8)} |`,
  );
  say();
  say(
    `Text search on ${p.search.table_rows.toLocaleString("en")} events (pg_trgm GIN index; table generated on the server in ${p.search.populate_seconds} s):`,
  );
  say();
  say("| search | p50 ms | p99 ms |");
  say("|---|---:|---:|");
  say(`| rare term (${p.search.rare.matches} matches) | ${p.search.rare.p50} | ${p.search.rare.p99} |`);
  say(`| a term no event holds | ${p.search.no_match.p50} | ${p.search.no_match.p99} |`);
  say(`| a term every event holds, newest 100 | ${p.search.common_100.p50} | ${p.search.common_100.p99} |`);
  say();
}

if (wanted("cluster")) {
  const c = await benchCluster(quick ? { bidSeconds: 3, streamSeconds: 3, trials: 1 } : {});
  say("### A cluster of replicas on one PostgreSQL");
  say();
  say(
    "Bids as in the table above (50 agents, 2,000 open auctions, 50 connections, every request replacing a bid), through a round-robin TCP balancer in this process in front of 1, 2 and 3 replicas, each on a fresh database, one after the other in this run. Every process shares the machine's cores: the database server, the replicas, the balancer and the load generator.",
  );
  say();
  say("| replicas | bids written/s | ÷ 1 replica | p50 ms | p99 ms | events per commit | refused | errors |");
  say("|---:|---:|---:|---:|---:|---:|---:|---:|");
  const one = c.bids[0]?.result.written_per_second ?? Number.NaN;
  for (const { replicas, result: b } of c.bids) {
    say(
      `| ${replicas} | ${b.written_per_second} | ${ratio(b.written_per_second, one)} | ${b.p50_ms} | ${b.p99_ms} | ${b.events_per_commit} | ${b.refused} | ${b.errors} |`,
    );
  }
  say();
  const s = c.stream;
  say(
    `Event to stream client, ${s.events_per_second} tool reports/s written through replica A; 20 clients on A and 20 on B at the same time (stamp in the event → message received):`,
  );
  say();
  say("| clients on | messages | p50 ms | p99 ms | max ms | goal | verdict |");
  say("|---|---:|---:|---:|---:|---|---|");
  say(
    `| A, the replica that wrote | ${s.same.messages} | ${s.same.p50_ms} | ${s.same.p99_ms} | ${s.same.max_ms} | — | — |`,
  );
  say(
    `| B, another replica (doorbell + tail of event_log) | ${s.cross.messages} | ${s.cross.p50_ms} | ${s.cross.p99_ms} | ${s.cross.max_ms} | p99 ≤ 100 ms | ${verdict(s.cross.p99_ms <= 100)} |`,
  );
  say();
  const f = c.failover;
  say(
    `Failover, ${f.trials} trials on 3 replicas: the lease holder, with ${Math.round(f.auctions / f.trials)} auctions just opened through it (deadlines 1–2 s ahead), killed with SIGKILL. ` +
      `The others closed all ${f.auctions} auctions, p50 ${f.close_late_p50_ms} ms and at most ${f.close_late_max_ms} ms after their deadlines (goal within 1,000 ms: ${verdict(f.close_late_max_ms <= 1000)}); ` +
      `another replica held the lease ${f.lease_moved_ms.map((ms) => `${ms} ms`).join(", ")} after the kill (SWARM_LEASE_MS 10,000: at most a lease and a beat).`,
  );
  say();
}

if (only === undefined) writeFileSync(new URL("./last-run.md", import.meta.url), `${lines.join("\n")}\n`);
