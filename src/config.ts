import { isIP } from "node:net";
import { SwarmError } from "./errors.js";
import { parseDatabaseSetting, type DatabaseSetting } from "./storage/database-setting.js";
import { LOG_FORMATS, type LogFormatSetting } from "./logger.js";

/** Every setting the product reads from the environment, with its default, in one place. */
export interface Config {
  host: string;
  port: number;
  /** SWARM_DB: an SQLite file (`:memory:` for a throwaway one) or a PostgreSQL database by URL. */
  database: DatabaseSetting;
  /**
   * How hard SQLite syncs a commit. NORMAL (default): a returned write survives a crash or
   * kill of the process; power loss may roll back the last few commits. FULL: it also survives
   * power loss, at about half the rate of one-at-a-time writes.
   */
  dbSynchronous: "FULL" | "NORMAL";
  apiKey: string | undefined;
  auctionMs: number;
  /** How long a winner has to start before its award passes on; false when 0 (awards never lapse). */
  ackMs: number | false;
  /** The cap on a retry's exponential backoff. */
  maxRetryBackoffMs: number;
  heartbeatTimeoutMs: number;
  retentionDays: number;
  /** Finished tasks (with their bids) and agents that left are kept this long; SWARM_RETENTION_DAYS when unset. */
  taskRetentionDays: number;
  /** How long an Idempotency-Key is remembered after its first use. */
  idempotencyKeyHours: number;
  pruneCron: string;
  /** Events agents may report on one task before its bids and tool reports are refused; false when 0. */
  maxEventsPerTask: number | false;
  /** Bytes of events one agent's reports may store per clock hour before they are refused; false when 0. */
  maxAgentBytesPerHour: number | false;
  /** Requests per minute per credential (or per IP without one); false when set to 0. */
  rateLimitPerMinute: number | false;
  /** Expensive reads (searches, exports, long summaries) per minute per credential; false when 0. */
  expensiveRateLimitPerMinute: number | false;
  logLevel: string;
  /** LOG_FORMAT: pretty lines or JSON; `auto` is pretty on a terminal, JSON otherwise. */
  logFormat: LogFormatSetting;
  /** With SWARM_API_KEY set: whether the dashboard may be viewed without logging in (actions still need the key). */
  dashboardPublic: boolean;
  /** With a public dashboard: whether anonymous viewers see tool inputs, outputs and results. */
  dashboardPublicDetails: boolean;
  /** Websockets (streams and dashboard pages) held open at once; more are closed with 1013. */
  maxSockets: number;
  /** Failed authentications per client address per 15 minutes before 429; false when set to 0. */
  authFailureLimit: number | false;
  /** SWARM_ALLOWED_HOSTS: Host names answered besides loopback ones and the listening address; "any" for `*`. */
  allowedHosts: string[] | "any";
  /**
   * Websockets one client may hold at once: an agent, the operator key, one dashboard login,
   * or one IP address for callers without credentials. More are closed with 1013.
   */
  maxSocketsPerClient: number;
  /**
   * Peers whose X-Forwarded-For/-Proto/-Host are believed (Fastify's `trustProxy`): none
   * (false), any (true), or these addresses and CIDRs.
   */
  trustProxy: boolean | string[];
  /** How long SIGTERM/SIGINT may take before the process exits anyway (with code 1). */
  shutdownGraceMs: number;
  /** SWARM_REPLICA_ID: this replica's name in /healthz, /metrics and the logs; unset: host-pid-random. */
  replicaId: string | undefined;
  /** On PostgreSQL: how long the maintenance lease (retention, rollups) lasts unrenewed. */
  leaseMs: number;
}

export const CONFIG_DEFAULTS = {
  HOST: "127.0.0.1",
  PORT: "3000",
  SWARM_DB: "./data/swarm.db",
  SWARM_DB_SYNC: "NORMAL",
  SWARM_AUCTION_MS: "5000",
  SWARM_ACK_MS: "10000",
  SWARM_MAX_RETRY_BACKOFF_MS: "300000",
  SWARM_HEARTBEAT_TIMEOUT_MS: "30000",
  SWARM_RETENTION_DAYS: "30",
  // Unset: as SWARM_RETENTION_DAYS, so that a task and its timeline go at about the same time.
  SWARM_TASK_RETENTION_DAYS: "",
  // A retry comes within minutes; a day covers a client that was down overnight (Stripe keeps 24 h).
  SWARM_IDEMPOTENCY_KEY_HOURS: "24",
  // A long agentic task reports a few hundred tool calls (two events each); 10,000 leaves it ten
  // times that, and bounds one task's timeline to ten pages of the event list and about 11 MB (a
  // tool event stores at most 1.1 KB of ASCII text, 3.1 KB of text that escapes badly).
  SWARM_MAX_EVENTS_PER_TASK: "10000",
  // 16 MiB: five times the busiest agent of the soak swarm (18 agents, 240 tasks a minute, each
  // bidding on most of them: 3.1 MiB an hour measured), yet an agent sending tool reports with every
  // field at its longest at the whole rate limit (78-215 MiB an hour, by how its text escapes)
  // meets it within 12 minutes: at most about 11 GiB a token over 30 days' retention.
  SWARM_MAX_AGENT_BYTES_PER_HOUR: String(16 * 1024 * 1024),
  // 03:17 every night: off the hour, so that many installs do not prune at the same instant.
  SWARM_PRUNE_CRON: "17 3 * * *",
  SWARM_REPLICA_ID: "",
  // A lost leader's retention and rollups resume on another replica within this (plus a beat).
  SWARM_LEASE_MS: "10000",
  SWARM_RATE_LIMIT: "1200",
  SWARM_EXPENSIVE_RATE_LIMIT: "30",
  LOG_LEVEL: "info",
  LOG_FORMAT: "auto",
  SWARM_DASHBOARD_PUBLIC: "false",
  SWARM_DASHBOARD_PUBLIC_DETAILS: "false",
  SWARM_MAX_SOCKETS: "2000",
  SWARM_ALLOWED_HOSTS: "",
  SWARM_AUTH_FAILURE_LIMIT: "30",
  // Far more than an agent's one or two streams or an operator's dashboard tabs (one socket
  // each), yet one token or address takes at most 1/30 of SWARM_MAX_SOCKETS's default.
  SWARM_MAX_SOCKETS_PER_CLIENT: "64",
  SWARM_TRUST_PROXY: "false",
  // Docker's `stop` waits 10 s before SIGKILL; systemd and Kubernetes wait longer.
  SWARM_SHUTDOWN_GRACE_MS: "10000",
} as const;

type Env = Record<string, string | undefined>;

function read(env: Env, name: keyof typeof CONFIG_DEFAULTS): string {
  const value = env[name];
  return value === undefined || value.trim() === "" ? CONFIG_DEFAULTS[name] : value.trim();
}

/** 0 turns the acknowledgement window off; otherwise it is as long as a task may ask for (100 ms to 7 days). */
function readAckMs(env: Env): number | false {
  if (read(env, "SWARM_ACK_MS").trim() === "0") return false;
  return readInteger(env, "SWARM_ACK_MS", 100, 7 * 86_400_000);
}

function readInteger(env: Env, name: keyof typeof CONFIG_DEFAULTS, min: number, max: number): number {
  const raw = read(env, name);
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SwarmError(
      "INVALID_CONFIG",
      `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`,
      { field: name },
    );
  }
  return value;
}

function readBoolean(env: Env, name: keyof typeof CONFIG_DEFAULTS): boolean {
  const value = read(env, name).toLowerCase();
  if (!["true", "false", "1", "0"].includes(value)) {
    throw new SwarmError("INVALID_CONFIG", `${name} must be true or false, got ${value}`, { field: name });
  }
  return value === "true" || value === "1";
}

/** A comma-separated list of host names or addresses, or `*` for any. */
function readHostList(env: Env, name: keyof typeof CONFIG_DEFAULTS): string[] | "any" {
  const raw = read(env, name);
  if (raw === "*") return "any";
  const hosts = raw
    .split(",")
    .map((host) => host.trim().toLowerCase())
    .filter((host) => host !== "");
  const bad = hosts.find((host) => !/^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*\.?|\[?[0-9a-f:.]+\]?)$/.test(host));
  if (bad !== undefined) {
    throw new SwarmError(
      "INVALID_CONFIG",
      `${name} must be a comma-separated list of host names (no ports or schemes) or *, got ${JSON.stringify(bad)}`,
      { field: name },
    );
  }
  return hosts;
}

/**
 * SWARM_MAX_AGENT_BYTES_PER_HOUR: 0 (off), or at least 1 MiB, so that one report of the largest
 * size an event may have always fits in a fresh hour.
 */
function readByteBudget(env: Env): number | false {
  const name = "SWARM_MAX_AGENT_BYTES_PER_HOUR";
  const raw = read(env, name);
  const value = Number(raw);
  if (value === 0) return false;
  if (!Number.isInteger(value) || value < 1_048_576 || value > Number.MAX_SAFE_INTEGER) {
    throw new SwarmError(
      "INVALID_CONFIG",
      `${name} must be 0 (no cap) or an integer of bytes from 1048576 (1 MiB) up, got ${JSON.stringify(raw)}`,
      { field: name },
    );
  }
  return value;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** 127.0.0.0/8, ::1 and localhost: where an open (keyless) server may listen. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Ranges that proxy-addr (under Fastify's `trustProxy`) knows by name. */
const PROXY_RANGE_NAMES = ["loopback", "linklocal", "uniquelocal"];

function isProxyAddress(entry: string): boolean {
  if (PROXY_RANGE_NAMES.includes(entry)) return true;
  const [address = "", prefix, ...rest] = entry.split("/");
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128));
}

function readTrustProxy(env: Env, host: string): boolean | string[] {
  const raw = read(env, "SWARM_TRUST_PROXY");
  const refuse = (problem: string): never => {
    throw new SwarmError("INVALID_CONFIG", `SWARM_TRUST_PROXY ${problem}, got ${JSON.stringify(raw)}`, {
      field: "SWARM_TRUST_PROXY",
    });
  };
  if (["false", "0"].includes(raw.toLowerCase())) return false;
  if (raw.toLowerCase() === "true") {
    // Believing everyone is sound only when nothing but the proxy on this machine can connect:
    // otherwise any client picks its own address (rate limits, failed-login limits) and host.
    if (!isLoopback(host)) refuse(`true believes every client when HOST=${host}; name the proxy's addresses`);
    return true;
  }
  // Fastify (5.12.1 on) trusts nobody given a number, and rightly: a count of hops cannot tell
  // the proxy from a client that writes its own X-Forwarded-* headers.
  if (/^\d+$/.test(raw)) refuse("cannot be a hop count; give the proxy's addresses or CIDRs instead");
  const entries = raw.split(",").map((entry) => entry.trim());
  const bad = entries.find((entry) => !isProxyAddress(entry));
  if (bad !== undefined) {
    refuse(
      `must be true, false, or a comma list of IP addresses and CIDRs (or loopback, linklocal, uniquelocal); ${JSON.stringify(bad)} is none of these`,
    );
  }
  return entries;
}

export function loadConfig(env: Env = process.env): Config {
  const dbSynchronous = read(env, "SWARM_DB_SYNC").toUpperCase();
  if (dbSynchronous !== "FULL" && dbSynchronous !== "NORMAL") {
    throw new SwarmError("INVALID_CONFIG", `SWARM_DB_SYNC must be FULL or NORMAL, got ${dbSynchronous}`, {
      field: "SWARM_DB_SYNC",
    });
  }
  const logLevel = read(env, "LOG_LEVEL").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new SwarmError("INVALID_CONFIG", `LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}`, {
      field: "LOG_LEVEL",
    });
  }
  const logFormat = read(env, "LOG_FORMAT").toLowerCase() as LogFormatSetting;
  if (!LOG_FORMATS.includes(logFormat)) {
    throw new SwarmError("INVALID_CONFIG", `LOG_FORMAT must be one of ${LOG_FORMATS.join(", ")}`, {
      field: "LOG_FORMAT",
    });
  }
  const apiKey = env.SWARM_API_KEY?.trim();
  const host = read(env, "HOST");
  if ((apiKey === undefined || apiKey === "") && !isLoopback(host)) {
    throw new SwarmError(
      "INVALID_CONFIG",
      `HOST=${host} would expose the coordinator beyond this machine without a key; set SWARM_API_KEY, or listen on 127.0.0.1`,
      { field: "SWARM_API_KEY" },
    );
  }
  if (apiKey !== undefined && apiKey !== "" && apiKey.length < 16) {
    throw new SwarmError("INVALID_CONFIG", "SWARM_API_KEY must be at least 16 characters", {
      field: "SWARM_API_KEY",
    });
  }

  const retentionDays = readInteger(env, "SWARM_RETENTION_DAYS", 1, 36_500);
  return {
    host,
    port: readInteger(env, "PORT", 0, 65535),
    database: parseDatabaseSetting(read(env, "SWARM_DB")),
    dbSynchronous,
    apiKey: apiKey === "" ? undefined : apiKey,
    auctionMs: readInteger(env, "SWARM_AUCTION_MS", 100, 3_600_000),
    ackMs: readAckMs(env),
    maxRetryBackoffMs: readInteger(env, "SWARM_MAX_RETRY_BACKOFF_MS", 0, 86_400_000),
    heartbeatTimeoutMs: readInteger(env, "SWARM_HEARTBEAT_TIMEOUT_MS", 1000, 86_400_000),
    retentionDays,
    taskRetentionDays:
      read(env, "SWARM_TASK_RETENTION_DAYS") === ""
        ? retentionDays
        : readInteger(env, "SWARM_TASK_RETENTION_DAYS", 1, 36_500),
    idempotencyKeyHours: readInteger(env, "SWARM_IDEMPOTENCY_KEY_HOURS", 1, 876_000),
    pruneCron: read(env, "SWARM_PRUNE_CRON"),
    maxEventsPerTask: readInteger(env, "SWARM_MAX_EVENTS_PER_TASK", 0, 100_000_000) || false,
    maxAgentBytesPerHour: readByteBudget(env),
    rateLimitPerMinute: readInteger(env, "SWARM_RATE_LIMIT", 0, 10_000_000) || false,
    expensiveRateLimitPerMinute: readInteger(env, "SWARM_EXPENSIVE_RATE_LIMIT", 0, 10_000_000) || false,
    logLevel,
    logFormat,
    dashboardPublic: readBoolean(env, "SWARM_DASHBOARD_PUBLIC"),
    dashboardPublicDetails: readBoolean(env, "SWARM_DASHBOARD_PUBLIC_DETAILS"),
    maxSockets: readInteger(env, "SWARM_MAX_SOCKETS", 1, 1_000_000),
    allowedHosts: readHostList(env, "SWARM_ALLOWED_HOSTS"),
    authFailureLimit: readInteger(env, "SWARM_AUTH_FAILURE_LIMIT", 0, 1_000_000) || false,
    maxSocketsPerClient: readInteger(env, "SWARM_MAX_SOCKETS_PER_CLIENT", 1, 1_000_000),
    trustProxy: readTrustProxy(env, host),
    shutdownGraceMs: readInteger(env, "SWARM_SHUTDOWN_GRACE_MS", 1000, 3_600_000),
    replicaId: readReplicaId(env),
    leaseMs: readInteger(env, "SWARM_LEASE_MS", 1000, 600_000),
  };
}

function readReplicaId(env: Env): string | undefined {
  // Set but empty is refused rather than taken for unset: a template's `$POD_NAME` that
  // expanded to nothing would otherwise pass for a generated name, different at every start.
  if (env.SWARM_REPLICA_ID !== undefined && env.SWARM_REPLICA_ID.trim() === "") {
    throw new SwarmError(
      "INVALID_CONFIG",
      "SWARM_REPLICA_ID is set but empty; give each replica a name, or unset it for a generated one",
      { field: "SWARM_REPLICA_ID" },
    );
  }
  const value = read(env, "SWARM_REPLICA_ID");
  if (value === "") return undefined;
  if (!/^[A-Za-z0-9._:-]{1,100}$/.test(value)) {
    throw new SwarmError(
      "INVALID_CONFIG",
      `SWARM_REPLICA_ID must be 1-100 characters of letters, digits, '.', '_', ':' or '-', got ${JSON.stringify(value.slice(0, 120))}`,
      { field: "SWARM_REPLICA_ID" },
    );
  }
  return value;
}
