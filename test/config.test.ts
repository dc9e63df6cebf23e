import { describe, expect, it } from "vitest";
import { CONFIG_DEFAULTS, loadConfig } from "../src/config.js";
import { describeDatabase } from "../src/storage/database-setting.js";

describe("configuration", () => {
  it("uses the documented defaults when nothing is set", () => {
    expect(loadConfig({})).toEqual({
      host: "127.0.0.1",
      port: 3000,
      database: { engine: "sqlite", path: "./data/swarm.db" },
      dbSynchronous: "NORMAL",
      apiKey: undefined,
      auctionMs: 5000,
      ackMs: 10_000,
      maxRetryBackoffMs: 300_000,
      heartbeatTimeoutMs: 30000,
      retentionDays: 30,
      taskRetentionDays: 30,
      idempotencyKeyHours: 24,
      pruneCron: CONFIG_DEFAULTS.SWARM_PRUNE_CRON,
      maxEventsPerTask: 10_000,
      maxAgentBytesPerHour: 16 * 1024 * 1024,
      rateLimitPerMinute: 1200,
      expensiveRateLimitPerMinute: 30,
      logLevel: "info",
      logFormat: "auto",
      dashboardPublic: false,
      dashboardPublicDetails: false,
      maxSockets: 2000,
      allowedHosts: [],
      authFailureLimit: 30,
      maxSocketsPerClient: 64,
      trustProxy: false,
      shutdownGraceMs: 10_000,
      replicaId: undefined,
      leaseMs: 10_000,
    });
  });

  it.each(["postgres://user:secret@db.example:5432/swarm", "postgresql://localhost/swarm"])(
    "takes SWARM_DB=%s for a PostgreSQL database, and shows it without its password",
    (value) => {
      const { database } = loadConfig({ SWARM_DB: value });
      expect(database).toEqual({ engine: "postgres", url: value });
      expect(describeDatabase(database)).not.toContain("secret");
      expect(describeDatabase(database)).toMatch(/^postgres(ql)?:\/\//);
    },
  );

  it.each(["mysql://user:secret@x/db", "HTTP://x", "sqlite://x.db"])(
    "refuses SWARM_DB=%s, a URL of another kind, by name and without repeating it (it may hold a password)",
    (value) => {
      let message = "";
      try {
        loadConfig({ SWARM_DB: value });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^SWARM_DB is a [a-z]+:\/\/ URL/i);
      expect(message).not.toContain("secret");
    },
  );

  it("takes SWARM_DB paths that merely contain a colon as paths", () => {
    expect(loadConfig({ SWARM_DB: "./data/a:b.db" }).database).toEqual({
      engine: "sqlite",
      path: "./data/a:b.db",
    });
    expect(loadConfig({ SWARM_DB: ":memory:" }).database).toEqual({ engine: "sqlite", path: ":memory:" });
  });

  it("reads SWARM_ALLOWED_HOSTS as a list of names, or * for any, and refuses ports and schemes by name", () => {
    expect(loadConfig({ SWARM_ALLOWED_HOSTS: " Swarm.Example.com, 10.0.0.5 ,[::1]" }).allowedHosts).toEqual([
      "swarm.example.com",
      "10.0.0.5",
      "[::1]",
    ]);
    expect(loadConfig({ SWARM_ALLOWED_HOSTS: "*" }).allowedHosts).toBe("any");
    for (const bad of ["swarm.example.com:443", "https://swarm.example.com", "a b"]) {
      expect(() => loadConfig({ SWARM_ALLOWED_HOSTS: bad })).toThrow(/SWARM_ALLOWED_HOSTS/);
    }
  });

  it("reads every variable", () => {
    const config = loadConfig({
      HOST: "0.0.0.0",
      PORT: "8080",
      SWARM_DB: ":memory:",
      SWARM_DB_SYNC: "full",
      SWARM_API_KEY: " a-long-enough-secret ",
      SWARM_RATE_LIMIT: "0",
      SWARM_EXPENSIVE_RATE_LIMIT: "5",
      SWARM_AUCTION_MS: "250",
      SWARM_HEARTBEAT_TIMEOUT_MS: "5000",
      SWARM_RETENTION_DAYS: "7",
      SWARM_PRUNE_CRON: "0 * * * *",
      LOG_LEVEL: "DEBUG",
      LOG_FORMAT: "JSON",
      SWARM_DASHBOARD_PUBLIC: "true",
      SWARM_MAX_SOCKETS_PER_CLIENT: "8",
      SWARM_REPLICA_ID: "web-2.eu:a_1",
      SWARM_LEASE_MS: "30000",
      SWARM_ACK_MS: "2500",
      SWARM_MAX_RETRY_BACKOFF_MS: "60000",
    });
    expect(config).toMatchObject({
      ackMs: 2500,
      maxRetryBackoffMs: 60_000,
      host: "0.0.0.0",
      port: 8080,
      dbSynchronous: "FULL",
      apiKey: "a-long-enough-secret",
      rateLimitPerMinute: false,
      expensiveRateLimitPerMinute: 5,
      dashboardPublic: true,
      auctionMs: 250,
      retentionDays: 7,
      logLevel: "debug",
      logFormat: "json",
      maxSocketsPerClient: 8,
      replicaId: "web-2.eu:a_1",
      leaseMs: 30_000,
    });
  });

  it("turns award acknowledgement off with SWARM_ACK_MS=0, and refuses a window too short, naming it", () => {
    expect(loadConfig({ SWARM_ACK_MS: "0" }).ackMs).toBe(false);
    expect(() => loadConfig({ SWARM_ACK_MS: "50" })).toThrow(/SWARM_ACK_MS must be an integer from 100/);
    expect(() => loadConfig({ SWARM_MAX_RETRY_BACKOFF_MS: "-1" })).toThrow(/SWARM_MAX_RETRY_BACKOFF_MS/);
  });

  it("keeps finished tasks as long as events unless SWARM_TASK_RETENTION_DAYS says otherwise", () => {
    expect(loadConfig({ SWARM_RETENTION_DAYS: "7" })).toMatchObject({
      retentionDays: 7,
      taskRetentionDays: 7,
    });
    expect(loadConfig({ SWARM_RETENTION_DAYS: "7", SWARM_TASK_RETENTION_DAYS: "90" })).toMatchObject({
      retentionDays: 7,
      taskRetentionDays: 90,
    });
    expect(loadConfig({ SWARM_IDEMPOTENCY_KEY_HOURS: "2" }).idempotencyKeyHours).toBe(2);
  });

  it("reads the caps on what agents report, 0 turning each off", () => {
    expect(
      loadConfig({ SWARM_MAX_EVENTS_PER_TASK: "500", SWARM_MAX_AGENT_BYTES_PER_HOUR: "2000000" }),
    ).toMatchObject({ maxEventsPerTask: 500, maxAgentBytesPerHour: 2_000_000 });
    expect(loadConfig({ SWARM_MAX_EVENTS_PER_TASK: "0", SWARM_MAX_AGENT_BYTES_PER_HOUR: "0" })).toMatchObject(
      {
        maxEventsPerTask: false,
        maxAgentBytesPerHour: false,
      },
    );
  });

  it("reads SWARM_TRUST_PROXY as true, false, or a list of proxy addresses and CIDRs", () => {
    expect(loadConfig({ SWARM_TRUST_PROXY: "TRUE" }).trustProxy).toBe(true);
    expect(loadConfig({ SWARM_TRUST_PROXY: "false" }).trustProxy).toBe(false);
    expect(loadConfig({ SWARM_TRUST_PROXY: "0" }).trustProxy).toBe(false);
    expect(
      loadConfig({ SWARM_TRUST_PROXY: " 127.0.0.1, 10.0.0.0/8 ,::1,fd00::/8,loopback " }).trustProxy,
    ).toEqual(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "loopback"]);
    // Fastify trusts nobody given a count, so a count is refused rather than silently ignored.
    expect(() => loadConfig({ SWARM_TRUST_PROXY: "2" })).toThrow(/cannot be a hop count/);
    // Believing every peer is refused where peers other than a local proxy can connect.
    expect(() =>
      loadConfig({ SWARM_TRUST_PROXY: "true", HOST: "0.0.0.0", SWARM_API_KEY: "a-long-enough-secret" }),
    ).toThrow(/believes every client/);
  });

  it("refuses to listen beyond loopback without a key, saying why", () => {
    expect(() => loadConfig({ HOST: "0.0.0.0" })).toThrow(/SWARM_API_KEY/);
    expect(() => loadConfig({ HOST: "192.168.1.5", SWARM_API_KEY: "" })).toThrow(
      expect.objectContaining({ code: "INVALID_CONFIG", details: { field: "SWARM_API_KEY" } }),
    );
    expect(loadConfig({ HOST: "127.0.0.2" }).host).toBe("127.0.0.2");
    expect(loadConfig({ HOST: "::1" }).host).toBe("::1");
    expect(() => loadConfig({ SWARM_API_KEY: "short" })).toThrow(/at least 16/);
  });

  it.each([
    ["PORT", "http"],
    ["PORT", "70000"],
    ["SWARM_RETENTION_DAYS", "0"],
    ["SWARM_AUCTION_MS", "1.5"],
    ["SWARM_DB_SYNC", "OFF"],
    ["LOG_LEVEL", "loud"],
    ["LOG_FORMAT", "colour"],
    ["SWARM_DASHBOARD_PUBLIC", "maybe"],
    ["SWARM_EXPENSIVE_RATE_LIMIT", "-1"],
    ["SWARM_MAX_SOCKETS_PER_CLIENT", "0"],
    ["SWARM_TRUST_PROXY", "1"],
    ["SWARM_TRUST_PROXY", "proxy.example"],
    ["SWARM_TRUST_PROXY", "10.0.0.0/33"],
    ["SWARM_TRUST_PROXY", "127.0.0.1,"],
    ["SWARM_SHUTDOWN_GRACE_MS", "500"],
    ["SWARM_TASK_RETENTION_DAYS", "0"],
    ["SWARM_TASK_RETENTION_DAYS", "a week"],
    ["SWARM_IDEMPOTENCY_KEY_HOURS", "0"],
    ["SWARM_MAX_EVENTS_PER_TASK", "-1"],
    ["SWARM_MAX_EVENTS_PER_TASK", "1.5"],
    ["SWARM_MAX_AGENT_BYTES_PER_HOUR", "1000"],
    ["SWARM_MAX_AGENT_BYTES_PER_HOUR", "32MB"],
    ["SWARM_REPLICA_ID", "web 2"],
    ["SWARM_REPLICA_ID", ""],
    ["SWARM_REPLICA_ID", "  "],
    ["SWARM_REPLICA_ID", "<script>"],
    ["SWARM_REPLICA_ID", "x".repeat(101)],
    ["SWARM_LEASE_MS", "999"],
    ["SWARM_LEASE_MS", "600001"],
    ["SWARM_LEASE_MS", "10s"],
  ])("refuses %s=%s, naming the variable", (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(
      expect.objectContaining({
        code: "INVALID_CONFIG",
        details: { field: name },
        message: expect.stringContaining(name) as string,
      }),
    );
  });
});
