/**
 * Scenario 1, kill -9 under load: the product (`npm start`) runs in its own process while
 * agents and operators drive its API at full speed; it is killed with SIGKILL at random
 * moments and restarted on the same file. After each kill, before the restart, the file is
 * checked (integrity, gapless seq, nothing twice, every acknowledged request's events kept);
 * after each restart, nothing may be stuck and every auction the crash interrupted must close
 * with the bids it had.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BENCH_KEY, freePort, PRODUCT, start, stop, type Running } from "../bench/harness.js";
import { inspect, type Inspector, type OpenAuction } from "./invariants.js";
import { Load, seededRandom } from "./load.js";

export interface CrashOptions {
  kills: number;
  agents?: number;
  operators?: number;
  /** How long the server runs between restarts and kills: a random time in this range, ms. */
  upMs?: readonly [number, number];
  seed?: number;
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
  violations: string[];
}

const HEARTBEAT_TIMEOUT_MS = 3000;
/** The tick closes due auctions every 100 ms; a reader beside the server may look between ticks. */
const TICK_SLACK_MS = 1000;
const MAX_AUCTION_MS = 1500;

export async function runCrashScenario(options: CrashOptions): Promise<CrashReport> {
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const random = seededRandom(seed);
  const say = options.progress ?? (() => {});
  const [minUp, maxUp] = options.upMs ?? [50, 2500];
  const dir = mkdtempSync(join(tmpdir(), "swarm-crash-"));
  const path = join(dir, "swarm.db");
  const port = await freePort();
  const env = {
    SWARM_DB: path,
    SWARM_API_KEY: BENCH_KEY,
    SWARM_RATE_LIMIT: "0",
    SWARM_HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS),
    LOG_LEVEL: "error",
  };
  const began = Date.now();
  const violations: string[] = [];
  const pending: OpenAuction[] = []; // interrupted auctions not yet due at the restart
  let interrupted = 0;
  let server: Running = await start(PRODUCT, env, port);
  const load = new Load({
    url: server.url,
    agents: options.agents ?? 6,
    operators: options.operators ?? 2,
    random,
  });
  const check = <T>(use: (inspector: Inspector) => T): T => inspect(path, use);

  try {
    await load.start();
    for (let kill = 1; kill <= options.kills; kill += 1) {
      const upFor = minUp + Math.floor(random() * (maxUp - minUp));
      await new Promise((resolve) => setTimeout(resolve, upFor));
      const exited = new Promise((resolve) => server.child.once("exit", resolve));
      server.child.kill("SIGKILL");
      await exited;
      // Answers already on their way have arrived by now; none can come after the kill.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const acked = [...load.acked];
      const atCrash = check((inspector) => {
        violations.push(...inspector.checkStore(), ...inspector.checkAcknowledged(acked));
        return {
          auctions: inspector.openAuctions(),
          events: inspector.count("SELECT COUNT(*) FROM event_log"),
        };
      });
      interrupted += atCrash.auctions.length;

      server = await start(PRODUCT, env, port);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const restartedAt = Date.now();
      check((inspector) => {
        violations.push(...inspector.checkNothingStuck(HEARTBEAT_TIMEOUT_MS, TICK_SLACK_MS));
        for (const auction of atCrash.auctions) {
          if (auction.closes_at <= restartedAt - TICK_SLACK_MS)
            violations.push(...inspector.checkClosed(auction));
          else pending.push(auction);
        }
      });
      say(
        `kill ${kill}/${options.kills} after ${upFor} ms up: ${acked.length} acknowledged, ` +
          `${atCrash.events} events, ${atCrash.auctions.length} auctions open — ` +
          (violations.length === 0 ? "all invariants hold" : `${violations.length} violations so far`),
      );
    }
    await load.stop();
    // Every auction still open at a crash has come due by now.
    await new Promise((resolve) => setTimeout(resolve, MAX_AUCTION_MS + TICK_SLACK_MS));
    check((inspector) => {
      violations.push(...inspector.checkNothingStuck(HEARTBEAT_TIMEOUT_MS, TICK_SLACK_MS));
      for (const auction of pending) violations.push(...inspector.checkClosed(auction));
    });
    await stop(server);
    violations.push(...load.serverErrors.map((error) => `server error: ${error}`));
    return check((inspector) => {
      violations.push(...inspector.checkStore(), ...inspector.checkAcknowledged(load.acked));
      return {
        seed,
        kills: options.kills,
        durationMs: Date.now() - began,
        requests: load.requests,
        acknowledged: load.acked.length,
        events: inspector.count("SELECT COUNT(*) FROM event_log"),
        tasks: inspector.count("SELECT COUNT(*) FROM tasks"),
        interruptedAuctions: interrupted,
        violations,
      };
    });
  } finally {
    await load.stop();
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
    if (violations.length === 0) rmSync(dir, { recursive: true, force: true });
    else say(`the database is kept for inspection: ${path}`);
  }
}
