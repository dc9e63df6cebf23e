/**
 * Scenario 1, kill -9 under load: the product (`npm start`) runs in its own process while
 * agents and operators drive its API at full speed; it is killed with SIGKILL at random
 * moments and restarted on the same database. After each kill, before the restart, the store is
 * checked (integrity, gapless seq, nothing twice, every acknowledged request's events kept);
 * after each restart, nothing may be stuck and every auction the crash interrupted must close
 * with the bids it had.
 *
 * The database is a new SQLite file in a temporary folder, or the PostgreSQL database `db`
 * names (SWARM_DB=postgres://…): there the product is killed and the database server is not,
 * so what is tested is that no transaction the product had acknowledged is lost and none it
 * had not finished leaves anything behind.
 *
 * With `replicas` > 1 (PostgreSQL only) it is the cluster's scenario: that many replicas on the
 * one database behind a round-robin balancer, the load going through the balancer. Each kill
 * takes a random replica, and the others carry on alone: the auctions open at the kill must be
 * closed by them within a second of their deadline, with the bids they had, before the killed
 * replica is started again (under its name) and rejoins.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBalancer, type Balancer } from "../bench/balancer.js";
import { BENCH_KEY, freePort, PRODUCT, start, stop, type Running } from "../bench/harness.js";
import { redactedUrl } from "../src/run-server.js";
import { isPostgresUrl } from "../src/storage/postgres/database.js";
import { inspect, type Inspector, type OpenAuction } from "./invariants.js";
import { Load, seededRandom } from "./load.js";

export interface CrashOptions {
  kills: number;
  agents?: number;
  operators?: number;
  /** How long the server runs between restarts and kills: a random time in this range, ms. */
  upMs?: readonly [number, number];
  seed?: number;
  /**
   * A postgres:// URL: run on that database (one of its own: the checks read every row in it).
   * Default: a new SQLite file in a temporary folder, removed after a run that passed.
   */
  db?: string;
  /** How many replicas share the database (more than one needs PostgreSQL); default 1. */
  replicas?: number;
  progress?: (line: string) => void;
}

export interface CrashReport {
  seed: number;
  kills: number;
  durationMs: number;
  requests: number;
  acknowledged: number;
  events: number;
  tasks: number;
  interruptedAuctions: number;
  replicas: number;
  /** Cluster mode: how late after its deadline the latest interrupted auction closed, ms. */
  latestCloseMs: number | null;
  violations: string[];
}

const HEARTBEAT_TIMEOUT_MS = 3000;
/** The tick closes due auctions every 100 ms; a reader beside the server may look between ticks. */
const TICK_SLACK_MS = 1000;
const MAX_AUCTION_MS = 1500;
/** The cluster's promise: an auction whose replica died is closed within this of its deadline. */
const CLUSTER_CLOSE_GOAL_MS = 1000;

export async function runCrashScenario(options: CrashOptions): Promise<CrashReport> {
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const random = seededRandom(seed);
  const say = options.progress ?? (() => {});
  const [minUp, maxUp] = options.upMs ?? [50, 2500];
  const replicas = options.replicas ?? 1;
  if (options.db !== undefined && !isPostgresUrl(options.db))
    throw new Error("db must be a postgres:// URL; without it the run makes an SQLite file of its own");
  if (!Number.isInteger(replicas) || replicas < 1)
    throw new Error("replicas must be a whole number, 1 or more");
  if (replicas > 1 && options.db === undefined)
    throw new Error("a cluster (replicas > 1) shares one PostgreSQL database: give db a postgres:// URL");
  const clustered = replicas > 1;
  const dir = options.db === undefined ? mkdtempSync(join(tmpdir(), "swarm-crash-")) : undefined;
  const db = options.db ?? join(dir as string, "swarm.db");
  const ports = await Promise.all(Array.from({ length: replicas }, () => freePort()));
  const env = {
    SWARM_DB: db,
    SWARM_API_KEY: BENCH_KEY,
    SWARM_RATE_LIMIT: "0",
    SWARM_HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS),
    LOG_LEVEL: "error",
  };
  // Replica i keeps its name and port across restarts, as a replica on its own host would.
  const startReplica = (i: number) =>
    start(PRODUCT, clustered ? { ...env, SWARM_REPLICA_ID: `crash-r${i + 1}` } : env, ports[i]);
  const began = Date.now();
  const violations: string[] = [];
  const pending: OpenAuction[] = []; // interrupted auctions not yet due at the restart
  let interrupted = 0;
  let latestCloseMs: number | null = null;
  const servers: Running[] = [];
  let balancer: Balancer | undefined;
  let load: Load | undefined;
  const check = <T>(use: (inspector: Inspector) => Promise<T>): Promise<T> => inspect(db, use);

  try {
    // One at a time: the first replica migrates the database, and each joins a running cluster.
    for (let i = 0; i < replicas; i += 1) servers.push(await startReplica(i));
    if (clustered) balancer = await startBalancer(servers.map((server) => new URL(server.url).host));
    const traffic = new Load({
      url: balancer?.url ?? (servers[0] as Running).url,
      agents: options.agents ?? 6,
      operators: options.operators ?? 2,
      random,
    });
    load = traffic;
    await traffic.start();
    for (let kill = 1; kill <= options.kills; kill += 1) {
      const upFor = minUp + Math.floor(random() * (maxUp - minUp));
      await new Promise((resolve) => setTimeout(resolve, upFor));
      const victim = Math.floor(random() * replicas);
      const server = servers[victim] as Running;
      const exited = new Promise((resolve) => server.child.once("exit", resolve));
      server.child.kill("SIGKILL");
      await exited;
      // Answers already on their way have arrived by now; none can come after the kill.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const acked = [...traffic.acked];
      const atCrash = await check(async (inspector) => {
        violations.push(...(await inspector.checkStore()), ...(await inspector.checkAcknowledged(acked)));
        return {
          auctions: await inspector.openAuctions(),
          events: await inspector.count("SELECT COUNT(*) FROM event_log"),
        };
      });
      interrupted += atCrash.auctions.length;

      if (clustered) {
        // The survivors alone: every auction open at the kill comes due, and must be closed by
        // them, on time, while the victim is still down.
        const due = Math.max(Date.now(), ...atCrash.auctions.map((auction) => auction.closes_at));
        await new Promise((resolve) => setTimeout(resolve, due - Date.now() + TICK_SLACK_MS));
        await check(async (inspector) => {
          violations.push(...(await inspector.checkNothingStuck(HEARTBEAT_TIMEOUT_MS, TICK_SLACK_MS)));
          for (const auction of atCrash.auctions) {
            violations.push(...(await inspector.checkClosed(auction, CLUSTER_CLOSE_GOAL_MS)));
            const late = await inspector.closeLateness(auction);
            if (late !== null) latestCloseMs = Math.max(latestCloseMs ?? 0, late);
          }
        });
        servers[victim] = await startReplica(victim);
      } else {
        servers[victim] = await startReplica(victim);
        await new Promise((resolve) => setTimeout(resolve, 300));
        const restartedAt = Date.now();
        await check(async (inspector) => {
          violations.push(...(await inspector.checkNothingStuck(HEARTBEAT_TIMEOUT_MS, TICK_SLACK_MS)));
          for (const auction of atCrash.auctions) {
            if (auction.closes_at <= restartedAt - TICK_SLACK_MS)
              violations.push(...(await inspector.checkClosed(auction)));
            else pending.push(auction);
          }
        });
      }
      say(
        `kill ${kill}/${options.kills}${clustered ? ` of replica ${victim + 1}/${replicas}` : ""} after ${upFor} ms up: ` +
          `${acked.length} acknowledged, ${atCrash.events} events, ${atCrash.auctions.length} auctions open — ` +
          (violations.length === 0 ? "all invariants hold" : `${violations.length} violations so far`),
      );
    }
    await traffic.stop();
    // Every auction still open at a crash has come due by now.
    await new Promise((resolve) => setTimeout(resolve, MAX_AUCTION_MS + TICK_SLACK_MS));
    await check(async (inspector) => {
      violations.push(...(await inspector.checkNothingStuck(HEARTBEAT_TIMEOUT_MS, TICK_SLACK_MS)));
      for (const auction of pending) violations.push(...(await inspector.checkClosed(auction)));
    });
    for (const server of servers) await stop(server);
    violations.push(...traffic.serverErrors.map((error) => `server error: ${error}`));
    return await check(async (inspector) => {
      violations.push(
        ...(await inspector.checkStore()),
        ...(await inspector.checkAcknowledged(traffic.acked)),
      );
      return {
        seed,
        kills: options.kills,
        durationMs: Date.now() - began,
        requests: traffic.requests,
        acknowledged: traffic.acked.length,
        events: await inspector.count("SELECT COUNT(*) FROM event_log"),
        tasks: await inspector.count("SELECT COUNT(*) FROM tasks"),
        interruptedAuctions: interrupted,
        replicas,
        latestCloseMs,
        violations,
      };
    });
  } finally {
    await load?.stop();
    await balancer?.close();
    for (const server of servers)
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
    if (violations.length > 0)
      say(`the database is kept for inspection: ${dir === undefined ? redactedUrl(db) : db}`);
    else if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }
}
