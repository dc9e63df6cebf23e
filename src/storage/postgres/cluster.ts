/**
 * Replicas on one PostgreSQL database: each one's row in `coordinator_replicas` (who is running,
 * refreshed every beat), and the lease in `coordinator_leases` under which the jobs that must run
 * on one replica at a time (retention, the hourly rollup) run. Everything is judged on the
 * database's clock (`now()`), so replicas with skewed clocks agree on who holds the lease.
 *
 * The lease is River's leader row: a holder renews it every beat; anyone may take it once it has
 * expired, and `term` grows each time it changes hands. A holder that cannot renew (the database
 * unreachable, the process paused) stops counting itself the leader once its own margin is
 * gone, measured on its monotonic clock from the last renewal that succeeded, before the lease
 * runs out in the database, so two replicas never both think they lead.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import type pg from "pg";
import type { ReplicaStatus } from "../../coordinator/port.js";
import { defaultReplicaId } from "../../coordinator/replica-id.js";
import type { Logger } from "../../logger.js";
import { inTransaction } from "./database.js";

/** The lease the singleton jobs run under. */
export const MAINTENANCE_LEASE = "maintenance";

export interface ClusterOptions {
  pool: pg.Pool;
  logger: Logger;
  /** This replica's name (SWARM_REPLICA_ID); default host name, pid and a random suffix. */
  replicaId?: string | undefined;
  /** How long a lease lasts without renewal. Default 10 s: a lost leader's jobs resume within it. */
  leaseMs?: number | undefined;
  /** How often the replica's row and the lease are refreshed. Default a third of the lease. */
  beatMs?: number | undefined;
  /**
   * A replica seen within this long is running. Default three beats; the shell makes it at most
   * half the agents' heartbeat timeout: a cluster down for less than that cost no agent its standing.
   */
  liveWithinMs?: number | undefined;
  /** Stands in for the database's clock when judging who is running (tests' fake clocks). */
  clock?: (() => Date) | undefined;
}

const SQL = {
  join:
    "INSERT INTO coordinator_replicas (id, host, pid) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE " +
    "SET host = excluded.host, pid = excluded.pid, started_at = now(), last_seen = now(), stopped_at = NULL",
  // A transaction-scoped advisory lock, for joining only (the key spells "swarmjoin").
  joinLock: "SELECT pg_advisory_xact_lock(7377397264767)",
  beat: "UPDATE coordinator_replicas SET last_seen = now(), stopped_at = NULL WHERE id = $1",
  livePeers:
    "SELECT COUNT(*) AS count FROM coordinator_replicas WHERE id <> $1 AND stopped_at IS NULL " +
    "AND last_seen > COALESCE($3::timestamptz, now()) - $2 * interval '1 millisecond'",
  // Take the lease if it is free or expired, renew it if it is ours; the term moves on a change
  // of hands only.
  // Ours means this process's: the replica's name and the token it drew at start.
  acquire:
    "INSERT INTO coordinator_leases (name, holder, holder_process, term, acquired_at, expires_at) " +
    "VALUES ($1, $2, $4, 1, now(), now() + $3 * interval '1 millisecond') ON CONFLICT (name) DO UPDATE SET " +
    "holder = excluded.holder, holder_process = excluded.holder_process, expires_at = excluded.expires_at, " +
    "term = CASE WHEN coordinator_leases.holder_process = excluded.holder_process THEN coordinator_leases.term ELSE coordinator_leases.term + 1 END, " +
    "acquired_at = CASE WHEN coordinator_leases.holder_process = excluded.holder_process THEN coordinator_leases.acquired_at ELSE now() END " +
    "WHERE coordinator_leases.holder_process = excluded.holder_process OR coordinator_leases.expires_at <= now() " +
    "RETURNING holder, term",
  holder: "SELECT holder FROM coordinator_leases WHERE name = $1 AND expires_at > now()",
  release: "UPDATE coordinator_leases SET expires_at = now() WHERE name = $1 AND holder_process = $2",
  leave: "UPDATE coordinator_replicas SET stopped_at = now() WHERE id = $1",
  // Rows of replicas gone for a day: kept that long so an operator can see what crashed.
  forget: "DELETE FROM coordinator_replicas WHERE last_seen < now() - interval '1 day'",
} as const;

export class ClusterMembership implements ReplicaStatus {
  readonly id: string;
  /** This process, whatever its name: two started with one SWARM_REPLICA_ID never share the lease. */
  private readonly processToken = randomUUID();
  private readonly pool: pg.Pool;
  private readonly logger: Logger;
  private readonly leaseMs: number;
  private readonly beatMs: number;
  private readonly liveWithinMs: number;
  private readonly clock: (() => Date) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  /** When our last renewal succeeded, on the monotonic clock; undefined while we do not hold it. */
  private renewedAt: number | undefined;
  private holder: string | null = null;
  private peerCount = 0;

  constructor(options: ClusterOptions) {
    this.pool = options.pool;
    this.id = options.replicaId ?? defaultReplicaId();
    // The shell's logger already names its component; a second `component` would repeat the key.
    this.logger = options.logger.child({ replica: this.id });
    this.leaseMs = options.leaseMs ?? 10_000;
    // Three beats within both the lease and the window peers are judged live in: a running
    // replica's row is never older than that window between its beats.
    const window = Math.min(this.leaseMs, options.liveWithinMs ?? this.leaseMs);
    this.beatMs = options.beatMs ?? Math.max(100, Math.floor(window / 3));
    this.liveWithinMs = options.liveWithinMs ?? this.beatMs * 3;
    this.clock = options.clock;
  }

  /** Whether this replica holds the lease now, with a margin of a beat before it could expire. */
  get leader(): boolean {
    return this.renewedAt !== undefined && performance.now() - this.renewedAt < this.leaseMs - this.beatMs;
  }

  get leaseHolder(): string | null {
    return this.leader ? this.id : this.holder;
  }

  /** Other replicas seen within the last three beats, as of the last beat. */
  get peers(): number {
    return this.peerCount;
  }

  /**
   * Write this replica's row, and say how many others are running: none means the whole cluster
   * was down (a cold start), after which agents get their grace period (Recover).
   */
  async join(): Promise<{ livePeers: number }> {
    // Counted and written under one lock: of replicas starting together, one finds none
    // running and recovers, and the others find it.
    await inTransaction(this.pool, async (client) => {
      await client.query(SQL.joinLock);
      await this.countPeers(client);
      await client.query(SQL.join, [this.id, hostname(), process.pid]);
    });
    this.logger.info({ live_peers: this.peerCount }, "replica joined");
    return { livePeers: this.peerCount };
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.runBeat();
    this.timer = setInterval(() => this.runBeat(), this.beatMs);
    this.timer.unref();
  }

  /** Leave cleanly: the lease is handed on at once rather than after it expires. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    const held = this.renewedAt !== undefined;
    this.renewedAt = undefined;
    try {
      if (held) await this.pool.query(SQL.release, [MAINTENANCE_LEASE, this.processToken]);
      await this.pool.query(SQL.leave, [this.id]);
    } catch (error) {
      this.logger.warn({ err: error }, "could not record this replica's leaving; it will time out instead");
    }
  }

  private runBeat(): void {
    if (this.beating !== undefined) return;
    this.beating = this.beat()
      .catch((error: unknown) => {
        this.logger.warn({ err: error }, "replica beat failed; retrying on the next");
      })
      .finally(() => {
        this.beating = undefined;
      });
  }

  /** Refresh this replica's row, count the others, and take or renew the lease. */
  async beat(): Promise<void> {
    const wasLeader = this.leader;
    const asked = performance.now();
    await this.pool.query(SQL.beat, [this.id]);
    await this.countPeers();
    const won = (
      await this.pool.query<{ holder: string; term: number }>(SQL.acquire, [
        MAINTENANCE_LEASE,
        this.id,
        this.leaseMs,
        this.processToken,
      ])
    ).rows[0];
    if (won !== undefined) {
      // Counted from before the statement was sent: the lease may have been written any time after.
      this.renewedAt = asked;
      this.holder = this.id;
      if (!wasLeader) this.logger.info({ term: won.term }, "this replica holds the maintenance lease");
    } else {
      this.renewedAt = undefined;
      const current = (await this.pool.query<{ holder: string }>(SQL.holder, [MAINTENANCE_LEASE])).rows[0];
      this.holder = current?.holder ?? null;
      if (wasLeader) this.logger.warn({ holder: this.holder }, "this replica lost the maintenance lease");
    }
    if (this.leader) await this.pool.query(SQL.forget);
  }

  private async countPeers(client: pg.Pool | pg.ClientBase = this.pool): Promise<void> {
    const row = (
      await client.query<{ count: number }>(SQL.livePeers, [
        this.id,
        this.liveWithinMs,
        this.clock?.().toISOString() ?? null,
      ])
    ).rows[0];
    this.peerCount = row?.count ?? 0;
  }
}
