/**
 * A large database, built straight through SQL in a few seconds rather than through the API in
 * hours: 10,000 agents, 100,000 tasks with their bids, about 1,000,000 events, one task with
 * 100,000 tool events of its own, and one open auction that every agent has bid in. Benchmarks
 * of reads that grow with the data (and of how long one request holds the event loop) start
 * the product on a copy of it.
 *
 * `npx tsx bench/seed-large.ts --db /tmp/large.db` builds one by hand, with its landmarks (the big
 * task's id, …) in `/tmp/large.db.json`.
 */
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { openDatabase } from "../src/storage/sqlite/database.js";
import { SQL } from "../src/storage/sqlite/queries.js";
import { seededRandom } from "../reliability/load.js";
import { newId } from "../src/ids.js";

export interface SeedOptions {
  /** The SQLite file to create; an existing one is replaced. */
  path: string;
  agents?: number;
  tasks?: number;
  /** Events in all, about: the lifecycles of the tasks fill what the big task leaves. */
  events?: number;
  /** Tool events of the one task with a long timeline. */
  bigTaskEvents?: number;
  /** Bids in the one crowded open auction (one per agent, at most every agent). */
  crowdedBids?: number;
  /** The newest timestamps are just before this; the oldest a week earlier. */
  now?: Date;
}

export interface SeedResult {
  path: string;
  agents: number;
  tasks: number;
  bids: number;
  events: number;
  /** A running task with `bigTaskEvents` tool events. */
  bigTaskId: string;
  /** An open auction with `crowdedBids` bids. */
  crowdedTaskId: string;
  /** The agent running the big task, which has won a fifth of all tasks. */
  busyAgentId: string;
  ms: number;
}

const CAPABILITIES = ["code", "search", "summarize", "writing", "data", "ops"];
const WORDS = ["refactor", "summarize", "review", "index", "translate", "deploy", "audit", "benchmark"];

export function seedLarge(options: SeedOptions): SeedResult {
  const started = performance.now();
  const agentCount = options.agents ?? 10_000;
  const taskCount = options.tasks ?? 100_000;
  const targetEvents = options.events ?? 1_000_000;
  const bigTaskEvents = options.bigTaskEvents ?? 100_000;
  const crowdedBids = Math.min(options.crowdedBids ?? 10_000, agentCount);
  const nowMs = (options.now ?? new Date()).getTime();
  const weekMs = 7 * 86_400_000;
  const iso = (ms: number) => new Date(ms).toISOString();
  // Deterministic, so two seeds of the same size are the same data.
  const rand = seededRandom(13);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;

  for (const suffix of ["", "-wal", "-shm"]) {
    if (existsSync(options.path + suffix)) rmSync(options.path + suffix);
  }
  const db = openDatabase({ path: options.path });
  // Nothing here needs to survive a crash until the end: the whole seed is thrown away if it fails.
  db.pragma("synchronous = OFF");
  const insertAgent = db.prepare(
    "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen, grace_until, left_at) " +
      "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
  );
  const insertTask = db.prepare(
    "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, max_bid_sats, attempt, assigned_agent, " +
      "winning_bid_sats, result, error, created_at, auction_closes_at, assigned_at, started_at, completed_at) " +
      "VALUES (?, ?, ?, ?, 5000, NULL, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const insertBid = db.prepare(
    "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at, outcome) VALUES (?, 1, ?, ?, ?, ?, ?)",
  );
  const insertEvent = db.prepare(SQL.insert);
  let events = 0;
  let bids = 0;
  const event = (
    type: string,
    source: string,
    taskId: string | null,
    agentId: string | null,
    data: object,
    at: number,
  ) => {
    insertEvent.run(newId(), type, source, taskId, agentId, JSON.stringify(data), iso(at));
    events += 1;
  };

  // Agents: registered over the week, most of them offline now, a few hundred deregistered.
  const agents: { id: string; name: string }[] = [];
  const online = Math.min(1500, Math.floor(agentCount / 5));
  db.transaction(() => {
    for (let i = 0; i < agentCount; i += 1) {
      const registered = nowMs - weekMs + Math.floor((i / agentCount) * weekMs * 0.5);
      const id = newId();
      // Names in an order of their own, so that by-name pages do not follow registration.
      const name = `${pick(WORDS)}-${String((i * 7919) % agentCount).padStart(5, "0")}`;
      const status = i < online ? (i % 3 === 0 ? "busy" : "idle") : "offline";
      const left = status === "offline" && i % 30 === 0 ? iso(registered + 3_600_000) : null;
      const capabilities = JSON.stringify(
        [pick(CAPABILITIES), pick(CAPABILITIES)].filter((c, k, all) => all.indexOf(c) === k),
      );
      insertAgent.run(id, name, capabilities, 4, status, iso(registered), iso(nowMs - 1000), left);
      event(
        "agent.joined",
        id,
        null,
        id,
        { name, capabilities: JSON.parse(capabilities) as string[], max_concurrent: 4 },
        registered,
      );
      agents.push({ id, name });
    }
  })();
  const busyAgent = agents[0] as { id: string };

  // Tasks, oldest first: nearly all finished, a few hundred running or assigned, the newest bidding.
  const bigTaskIndex = taskCount - 200;
  const lifecycleBudget = targetEvents - bigTaskEvents - events;
  let lifecycleEvents = 0;
  let bigTaskId = "";
  let crowdedTaskId = "";
  const chunk = 5000;
  for (let from = 0; from < taskCount; from += chunk) {
    db.transaction(() => {
      for (let i = from; i < Math.min(taskCount, from + chunk); i += 1) {
        const id = newId();
        const created = nowMs - weekMs + Math.floor((i / taskCount) * (weekMs - 7_200_000));
        const roll = rand();
        const isBig = i === bigTaskIndex;
        const isCrowded = i === taskCount - 1;
        const status = isBig
          ? "running"
          : i >= taskCount - 100
            ? "bidding"
            : i >= taskCount - 400
              ? roll < 0.5
                ? "assigned"
                : "running"
              : roll < 0.85
                ? "completed"
                : roll < 0.95
                  ? "failed"
                  : "cancelled";
        const bidders = new Set<number>();
        const wanted = 3 + Math.floor(rand() * 3);
        while (bidders.size < wanted) bidders.add(Math.floor(rand() * agentCount));
        // The first agent wins a fifth of all tasks: one agent with a long record.
        const favoured = isBig || rand() < 0.2;
        if (favoured) bidders.add(0);
        const order = [...bidders];
        const amounts = order.map(() => 20 + Math.floor(rand() * 500));
        const hasWinner = status !== "bidding" && status !== "cancelled";
        // The big task goes to the busy agent; other tasks to their lowest bidder.
        let winner = 0;
        amounts.forEach((amount, k) => {
          if (amount < (amounts[winner] as number)) winner = k;
        });
        if (favoured) {
          winner = order.indexOf(0);
          amounts[winner] = 10;
        }
        const winnerAgent = agents[order[winner] as number] as { id: string };
        const assigned = hasWinner ? winnerAgent.id : null;
        const closes = created + 5000;
        const finished =
          status === "completed" || status === "failed" || status === "cancelled" ? created + 60_000 : null;
        const description = `${pick(WORDS)} ${pick(WORDS)} #${i}`;
        insertTask.run(
          id,
          description,
          status,
          JSON.stringify([pick(CAPABILITIES)]),
          assigned,
          hasWinner ? amounts[winner] : null,
          status === "completed" ? `done: ${description}` : null,
          status === "failed" ? "the tool failed" : null,
          iso(created),
          // Open auctions close a week after the seed, so that a seeded file stays the same for benchmarks run on it later.
          status === "bidding" ? iso(nowMs + weekMs) : iso(closes),
          hasWinner ? iso(closes) : null,
          status === "running" || finished !== null ? iso(closes + 100) : null,
          finished === null ? null : iso(finished),
        );
        order.forEach((agentIndex, k) => {
          const outcome =
            status === "bidding" || status === "cancelled" ? null : k === winner ? "won" : "lost";
          insertBid.run(
            id,
            (agents[agentIndex] as { id: string }).id,
            amounts[k],
            k + 1,
            iso(created + 100 + k),
            outcome,
          );
          bids += 1;
        });
        // The lifecycle, cut to the budget per task.
        const lifecycle: [string, string, string | null, object][] = [
          ["task.created", "coordinator", null, { description }],
          ["task.bidding", "coordinator", null, { attempt: 1 }],
          ...order.map((agentIndex, k): [string, string, string | null, object] => {
            const agentId = (agents[agentIndex] as { id: string }).id;
            return ["bid.submitted", agentId, agentId, { bid_sats: amounts[k], attempt: 1 }];
          }),
        ];
        if (hasWinner) {
          lifecycle.push(
            ["auction.closed", "coordinator", null, { attempt: 1, winner: assigned, bids: order.length }],
            ["task.assigned", "coordinator", assigned, { bid_sats: amounts[winner] }],
          );
          if (status !== "assigned") lifecycle.push(["task.started", assigned!, assigned, {}]);
          if (status === "completed")
            lifecycle.push(["task.completed", assigned!, assigned, { result: `done: ${description}` }]);
          if (status === "failed")
            lifecycle.push(["task.failed", assigned!, assigned, { reason: "the tool failed", by: "agent" }]);
        } else if (status === "cancelled") {
          lifecycle.push(["task.cancelled", "coordinator", null, { by: "operator" }]);
        }
        // Cut to what keeps the running total on the budget (the tasks' lifecycles differ in length).
        const allowed = isBig
          ? lifecycle.length
          : Math.max(3, Math.round((lifecycleBudget * (i + 1)) / taskCount) - lifecycleEvents);
        lifecycle.slice(0, allowed).forEach(([type, source, agentId, data], k) => {
          event(type, source, id, agentId, data, created + k * 50);
          lifecycleEvents += 1;
        });
        if (isBig) bigTaskId = id;
        if (isCrowded) crowdedTaskId = id;
      }
    })();
  }

  // One open auction every agent still registered has bid in.
  db.transaction(() => {
    const bidders = agents.slice(0, crowdedBids);
    const hasBid = db.prepare("SELECT 1 FROM bids WHERE task_id = ? AND attempt = 1 AND agent_id = ?");
    let k = 0;
    for (const agent of bidders) {
      const taken = hasBid.get(crowdedTaskId, agent.id);
      if (taken !== undefined) continue;
      const maxOrder = 1000 + k;
      insertBid.run(crowdedTaskId, agent.id, 50 + ((k * 31) % 900), maxOrder, iso(nowMs - 60_000 + k), null);
      bids += 1;
      k += 1;
    }
  })();

  // The big task's tool calls, in the last two hours, with inputs and outputs of a few hundred bytes.
  const toolStart = nowMs - 7_200_000;
  for (let from = 0; from < bigTaskEvents; from += 10_000) {
    db.transaction(() => {
      for (let n = from; n < Math.min(bigTaskEvents, from + 10_000); n += 1) {
        const call = `call-${Math.floor(n / 2)}`;
        const at = toolStart + Math.floor((n / bigTaskEvents) * 7_100_000);
        const phase = n % 2 === 0 ? "tool.called" : "tool.completed";
        const data =
          phase === "tool.called"
            ? {
                tool: "web.search",
                call_id: call,
                input: { query: `${pick(WORDS)} ${"x".repeat(200)} ${n}` },
              }
            : { tool: "web.search", call_id: call, output: `${pick(WORDS)} ${"result ".repeat(60)}${n}` };
        event(phase, busyAgent.id, bigTaskId, busyAgent.id, data, at);
      }
    })();
  }

  // Counted into the hourly rollup, as the running server would have done every few minutes.
  const latest = (db.prepare(SQL.latestSeq).get() as { seq: number }).seq;
  db.transaction(() => {
    db.prepare(SQL.rollUpRange).run(0, latest);
    db.prepare(SQL.setRolledUpTo).run(latest);
  })();
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  return {
    path: options.path,
    agents: agentCount,
    tasks: taskCount,
    bids,
    events,
    bigTaskId,
    crowdedTaskId,
    busyAgentId: busyAgent.id,
    ms: Math.round(performance.now() - started),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const at = process.argv.indexOf("--db");
  const path = at > 0 ? process.argv[at + 1] : undefined;
  if (path === undefined) {
    console.error("usage: tsx bench/seed-large.ts --db <file>");
    process.exit(2);
  }
  const seeded = seedLarge({ path });
  // Its landmarks beside it, for benchmarks run on the file later (bench/large-reads.ts --db).
  writeFileSync(`${path}.json`, JSON.stringify(seeded, null, 2));
  console.log(JSON.stringify(seeded, null, 2));
}
