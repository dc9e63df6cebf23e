// SQLite only: opening its file (folders, WAL, migrations of the file). PostgreSQL's migrations
// and connections are tested in test/storage/ and test/event-log/event-log.test.ts.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { loadMigrations, openDatabase, schemaVersion } from "../../src/storage/sqlite/database.js";
import { openTestLog } from "../helpers/event-log.js";
import { tempDir } from "../helpers/temp-dir.js";

describe("opening the database", () => {
  it("creates the file and its folders on first use, in WAL mode with incremental vacuum", () => {
    const path = join(tempDir(), "nested", "deeper", "swarm.db");
    const log = openTestLog({ path });
    expect(existsSync(path)).toBe(true);
    expect(log.db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(log.db.pragma("auto_vacuum", { simple: true })).toBe(2);
    expect(log.db.pragma("synchronous", { simple: true })).toBe(1); // NORMAL
    const durable = openTestLog({ path: join(tempDir(), "full.db"), synchronous: "FULL" });
    expect(durable.db.pragma("synchronous", { simple: true })).toBe(2);
  });

  it("records the schema version and each applied migration", () => {
    const log = openTestLog({ path: join(tempDir(), "swarm.db") });
    const migrations = loadMigrations();
    expect(schemaVersion(log.db)).toBe(migrations.length);
    expect(log.db.prepare("SELECT version, name FROM schema_migrations ORDER BY version").all()).toEqual(
      migrations.map((m) => ({ version: m.version, name: m.name })),
    );
  });

  it("reopens an existing database without reapplying migrations, keeping its events", async () => {
    const path = join(tempDir(), "swarm.db");
    const first = openTestLog({ path });
    await first.logEvent({ event_type: "task.created", source: "coordinator" });
    first.close();
    const second = openTestLog({ path });
    expect(second.latestSeq()).toBe(1);
    expect(second.db.prepare("SELECT COUNT(*) FROM schema_migrations").pluck().get()).toBe(
      loadMigrations().length,
    );
  });

  it("refuses a database written by newer code, with a message that says what to do", () => {
    const path = join(tempDir(), "swarm.db");
    openTestLog({ path }).close();
    const raw = new Database(path);
    raw.pragma("user_version = 99");
    raw.close();
    expect(() => openTestLog({ path })).toThrow(/schema version 99 .* knows only up to \d+; upgrade/);
    expect(() => openTestLog({ path })).toThrow(expect.objectContaining({ code: "SCHEMA_TOO_NEW" }));
  });

  it("applies pending migrations in one transaction: a broken one leaves the database as it was", () => {
    const dir = tempDir();
    const migrationsDir = join(dir, "migrations");
    mkdirSync(migrationsDir);
    writeFileSync(join(migrationsDir, "001_first.sql"), "CREATE TABLE first_table (x INTEGER);");
    writeFileSync(
      join(migrationsDir, "002_broken.sql"),
      "CREATE TABLE second_table (x INTEGER); SELECT * FROM missing_table;",
    );
    const path = join(dir, "swarm.db");
    expect(() => openDatabase({ path, migrations: loadMigrations(migrationsDir) })).toThrow(/missing_table/);
    const raw = new Database(path);
    expect(raw.pragma("user_version", { simple: true })).toBe(0);
    expect(
      raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%_table'").all(),
    ).toEqual([]);
    raw.close();
  });

  it("refuses migration files numbered with a gap", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "001_a.sql"), "SELECT 1;");
    writeFileSync(join(dir, "003_c.sql"), "SELECT 1;");
    expect(() => loadMigrations(dir)).toThrow(/without gaps/);
  });
});

describe("background checkpoints", () => {
  it("copies the WAL back into the database from a worker thread while writes go on", async () => {
    const log = openTestLog({ path: join(tempDir(), "swarm.db"), checkpointIntervalMs: 10 });
    for (let round = 0; round < 20; round += 1) {
      await log.logEvents(
        Array.from({ length: 200 }, () => ({
          event_type: "tool.called",
          source: "test",
          data: { pad: "x".repeat(300) },
        })),
      );
    }
    const deadline = Date.now() + 10_000;
    let stats = log.checkpointStats();
    while (
      (stats?.last === undefined || stats.last.checkpointed < stats.last.log || stats.last.log === 0) &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      stats = log.checkpointStats();
    }
    expect(stats?.runs).toBeGreaterThan(0);
    expect(stats?.last?.log).toBeGreaterThan(0);
    expect(stats?.last?.checkpointed).toBe(stats?.last?.log);
    // SQLite's own checkpoint is pushed far out, so commits on the event loop never run one.
    expect(log.db.pragma("wal_autocheckpoint", { simple: true })).toBe(10_000);
  });

  it("runs none for an in-memory log or when turned off", () => {
    expect(openTestLog().checkpointStats()).toBeUndefined();
    expect(
      openTestLog({ path: join(tempDir(), "off.db"), checkpointIntervalMs: 0 }).checkpointStats(),
    ).toBeUndefined();
  });
});

describe("page size", () => {
  it("builds new files with 2 KiB pages and leaves an existing file's size alone", () => {
    const path = join(tempDir(), "swarm.db");
    expect(openTestLog({ path }).db.pragma("page_size", { simple: true })).toBe(2048);
    const oldPath = join(tempDir(), "old.db");
    const raw = new Database(oldPath);
    raw.pragma("page_size = 4096");
    raw.exec("CREATE TABLE unrelated (x INTEGER)");
    raw.close();
    expect(openTestLog({ path: oldPath }).db.pragma("page_size", { simple: true })).toBe(4096);
  });
});
