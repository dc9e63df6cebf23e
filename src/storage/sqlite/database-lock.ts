/**
 * One server per SQLite file. The coordinator keeps its working set (agents, live tasks, open
 * bids) in memory, so a second server on the same file would split the state: an agent
 * registered through one is unknown to the other, and both would close the same auctions.
 *
 * The lock is a sidecar SQLite file, `<db>.lock`, written once in `locking_mode=EXCLUSIVE` with
 * no busy timeout and held open for the life of the server. SQLite's locks are POSIX record
 * locks, which the kernel drops when the process dies however it dies, so a `kill -9` leaves
 * nothing to clean up and a restart a moment later takes the lock at once. A pid file would
 * outlive a killed holder; a lease row in the database cannot tell a crashed holder from a slow
 * one. The database file itself is not locked, so tools, tests and the background checkpointer
 * may open it beside the server as before.
 */
import { mkdirSync, realpathSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import Database from "better-sqlite3";
import { SwarmError } from "../../errors.js";
import { isInMemory } from "./database.js";

export interface DatabaseLock {
  /** The lock file, beside the database. */
  readonly path: string;
  /** Let another server take the file. Idempotent. */
  release(): void;
}

const NO_LOCK: DatabaseLock = { path: "", release() {} };

/**
 * The lock file for `dbPath`: beside the file, after resolving symbolic links, so that two
 * spellings of one file (relative, absolute, through a link) share one lock.
 */
export function lockPathFor(dbPath: string): string {
  const absolute = resolve(dbPath);
  let canonical: string;
  try {
    canonical = realpathSync(absolute);
  } catch {
    // Not created yet: its folder is made before the lock is taken, so that much resolves.
    canonical = join(realpathSync(dirname(absolute)), basename(absolute));
  }
  return `${canonical}.lock`;
}

function isBusy(error: unknown): boolean {
  return (
    error instanceof Database.SqliteError && (error.code === "SQLITE_BUSY" || error.code === "SQLITE_LOCKED")
  );
}

/**
 * Take the file for this process, or throw DATABASE_IN_USE naming it when another server holds
 * it. `:memory:` is nobody else's and needs no lock.
 */
export function lockDatabase(dbPath: string): DatabaseLock {
  if (isInMemory(dbPath)) return NO_LOCK;
  mkdirSync(dirname(resolve(dbPath)), { recursive: true });
  const path = lockPathFor(dbPath);
  let db: Database.Database | undefined;
  try {
    // timeout 0: a second server is told at once, not after five seconds of retries.
    db = new Database(path, { timeout: 0 });
    db.pragma("locking_mode = EXCLUSIVE");
    // No journal file beside the lock: a crash mid-write loses nothing that matters here.
    db.pragma("journal_mode = MEMORY");
    // In exclusive mode the first write takes the lock, and the connection never lets it go.
    db.exec(
      "CREATE TABLE IF NOT EXISTS holder (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER, since TEXT)",
    );
    db.prepare("INSERT OR REPLACE INTO holder (id, pid, since) VALUES (1, ?, ?)").run(
      process.pid,
      new Date().toISOString(),
    );
  } catch (error) {
    db?.close();
    if (isBusy(error)) {
      throw new SwarmError(
        "DATABASE_IN_USE",
        `SWARM_DB ${dbPath} is in use by another swarm coordinator (it holds ${path}); ` +
          "one server runs per SQLite file, since each keeps its working set in memory. " +
          "Stop the other server, or point SWARM_DB at another file; a cluster on PostgreSQL, " +
          "coming in a later release, is the supported way to run several",
        { field: "SWARM_DB", lock_file: path },
        { cause: error },
      );
    }
    const reason = error instanceof Error ? error.message : String(error);
    throw new SwarmError(
      "INVALID_CONFIG",
      `SWARM_DB ${dbPath}: cannot take its lock file ${path}: ${reason}`,
      {
        field: "SWARM_DB",
        lock_file: path,
      },
    );
  }
  const held = db;
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      held.close();
    },
  };
}
