import { describe, expect, it } from "vitest";
import { CONFIG_DEFAULTS, loadConfig } from "../src/config.js";

describe("configuration", () => {
  it("uses the documented defaults when nothing is set", () => {
    expect(loadConfig({})).toEqual({
      host: "127.0.0.1",
      port: 3000,
      dbPath: "./data/swarm.db",
      dbSynchronous: "NORMAL",
      apiKey: undefined,
      auctionMs: 5000,
      heartbeatTimeoutMs: 30000,
      retentionDays: 30,
      pruneCron: CONFIG_DEFAULTS.SWARM_PRUNE_CRON,
      logLevel: "info",
    });
  });

  it("reads every variable", () => {
    const config = loadConfig({
      HOST: "0.0.0.0",
      PORT: "8080",
      SWARM_DB: ":memory:",
      SWARM_DB_SYNC: "full",
      SWARM_API_KEY: " secret ",
      SWARM_AUCTION_MS: "250",
      SWARM_HEARTBEAT_TIMEOUT_MS: "5000",
      SWARM_RETENTION_DAYS: "7",
      SWARM_PRUNE_CRON: "0 * * * *",
      LOG_LEVEL: "DEBUG",
    });
    expect(config).toMatchObject({
      host: "0.0.0.0",
      port: 8080,
      dbSynchronous: "FULL",
      apiKey: "secret",
      auctionMs: 250,
      retentionDays: 7,
      logLevel: "debug",
    });
  });

  it.each([
    ["PORT", "http"],
    ["PORT", "70000"],
    ["SWARM_RETENTION_DAYS", "0"],
    ["SWARM_AUCTION_MS", "1.5"],
    ["SWARM_DB_SYNC", "OFF"],
    ["LOG_LEVEL", "loud"],
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
