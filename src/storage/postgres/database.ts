/**
 * Connecting to PostgreSQL: the URL, a pool with the product's type parsing, the numbered
 * migrations applied in one transaction (a database written by newer code is refused), and the
 * mapping of the server's failures onto the product's storage errors.
 */
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { SwarmError } from "../../errors.js";
import type { Logger } from "../../logger.js";

export const POSTGRES_MIGRATIONS_DIR = fileURLToPath(
  new URL("../../../db/migrations/postgres/", import.meta.url),
);

export interface PostgresMigration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATION_FILE = /^(\d+)_([a-z0-9_-]+)\.sql$/;

/** Any two concurrent starts against one database apply migrations one after the other. */
const MIGRATION_LOCK_KEY = 0x5377_6172; // "Swar"

export function loadPostgresMigrations(dir: string = POSTGRES_MIGRATIONS_DIR): PostgresMigration[] {
  const migrations = readdirSync(dir)
    .map((file) => MIGRATION_FILE.exec(file))
    .filter((match): match is RegExpExecArray => match !== null)
    .map(([file, version, name]) => ({
      version: Number(version),
      name: name ?? "",
      sql: readFileSync(resolve(dir, file), "utf8"),
    }))
    .sort((a, b) => a.version - b.version);
  migrations.forEach((migration, index) => {
    if (migration.version !== index + 1) {
      throw new Error(
        `migrations must be numbered 1, 2, 3… without gaps; found ${migration.version} at ${index + 1}`,
      );
    }
  });
  return migrations;
}

/** Whether SWARM_DB (or a `url` option) names a PostgreSQL database rather than an SQLite file. */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

// bigint (seq, counts) and numeric (sums) come back as strings by default, since they may exceed
// 2^53; the product's seqs and counts never come near it, and every reader expects numbers.
const INT8 = 20;
const NUMERIC = 1700;
const typeParsers: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (oid === INT8 || oid === NUMERIC) return (value: string) => Number(value);
    // pg's own parser for everything else (its overloads return `any`: the parsed value's type
    // depends on the column's type at run time).
    return pg.types.getTypeParser(oid, format ?? "text") as (value: string) => unknown;
  }) as pg.CustomTypesConfig["getTypeParser"],
};

export interface PoolOptions {
  url: string;
  /** Most connections the pool opens. Default 10. */
  maxConnections?: number;
  /** How long a request waits to connect before it fails (and is answered 503). Default 5000 ms. */
  connectTimeoutMs?: number;
  logger: Logger;
}

export function openPool({
  url,
  maxConnections = 10,
  connectTimeoutMs = 5000,
  logger,
}: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: maxConnections,
    connectionTimeoutMillis: connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    // A peer that vanishes without closing the socket (a partition, a paused host) is noticed
    // by keepalives and the statement timeout rather than after the kernel's quarter of an hour.
    keepAlive: true,
    types: typeParsers,
    application_name: "swarm-coordinator",
    // What the code relies on, whatever the database or role defaults to: READ COMMITTED (the
    // head row and the rollup re-read the newest committed row after waiting for its lock),
    // backslash as a plain character in literals (the LIKE escape), and no statement left
    // running for ever.
    options:
      "-c default_transaction_isolation=read\\ committed -c standard_conforming_strings=on -c statement_timeout=60000",
  });
  // An idle connection the server drops (a restart, a failover) is reported here; without a
  // listener it would crash the process. The pool replaces it on the next checkout.
  pool.on("error", (error) => logger.warn({ err: error }, "an idle PostgreSQL connection failed"));
  return pool;
}

/**
 * Run `body` on a connection of its own, taken from the pool and given back after, broken or not.
 * While it is out of the pool, a connection that fails (the server restarts, the backend is
 * terminated) reports it on the client, which without a listener would crash the process.
 */
export async function withClient<T>(pool: pg.Pool, body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (error: Error) => {
    broken = error;
  };
  client.on("error", onError);
  try {
    return await body(client);
  } finally {
    client.off("error", onError);
    // A broken connection is closed rather than handed to the next caller.
    client.release(broken);
  }
}

/** Run `body` in one transaction on a connection of its own: committed if it resolves, rolled back if not. */
export async function inTransaction<T>(
  pool: pg.Pool,
  body: (client: pg.PoolClient) => Promise<T>,
  begin = "BEGIN",
): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query(begin);
    try {
      const result = await body(client);
      await client.query("COMMIT");
      return result;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    }
  });
}

/** The schema version the database is at: the newest migration recorded, 0 for a new database. */
export async function postgresSchemaVersion(client: pg.ClientBase): Promise<number> {
  const exists = await client.query<{ present: boolean }>(
    "SELECT to_regclass('schema_migrations') IS NOT NULL AS present",
  );
  if (exists.rows[0]?.present !== true) return 0;
  const result = await client.query<{ version: number | null }>(
    "SELECT MAX(version) AS version FROM schema_migrations",
  );
  return result.rows[0]?.version ?? 0;
}

/** Bring the database up to the code's schema, in one transaction; refuse one that is newer. */
export async function migratePostgres(
  pool: pg.Pool,
  migrations: PostgresMigration[] = loadPostgresMigrations(),
): Promise<void> {
  await withClient(pool, async (client) => {
    // Taken before the transaction begins, so that a start which waited for another sees the
    // schema that one left (a snapshot taken before the wait would not).
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    try {
      await client.query("BEGIN");
      try {
        const current = await postgresSchemaVersion(client);
        const known = migrations.length;
        if (current > known) {
          throw new SwarmError(
            "SCHEMA_TOO_NEW",
            `the database is at schema version ${current} but this code knows only up to ${known}; ` +
              "upgrade the swarm coordinator or point SWARM_DB at another database",
            { found: current, supported: known },
          );
        }
        await client.query(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at text NOT NULL)",
        );
        for (const migration of migrations.slice(current)) {
          await client.query(migration.sql);
          await client.query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            [migration.version, migration.name, new Date().toISOString()],
          );
        }
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw error;
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch(() => undefined);
    }
  });
}

/** The SQLSTATE or connection error code of a failure from the driver, if it has one. */
/**
 * The database's clock: the one every replica judges deadlines, heartbeats and cutoffs by.
 * `clock_timestamp()`, not `now()`: inside a transaction, the time of this call, not of BEGIN.
 */
export async function databaseNow(db: pg.Pool | pg.ClientBase): Promise<Date> {
  const row = (await db.query<{ now: Date }>("SELECT clock_timestamp() AS now")).rows[0];
  if (row === undefined) throw new Error("clock_timestamp() returned no row");
  return row.now;
}

export function postgresErrorCode(error: unknown): string | undefined {
  if (error === null || typeof error !== "object") return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

const UNIQUE_VIOLATION = "23505";

/** Socket-level failures: the server is not there (or not any more). */
const CONNECTION_ERRORS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/**
 * Whether the failure is the database's state rather than the request: unreachable or dropped
 * connections, and SQLSTATE classes 08 (connection), 53 (out of resources: disk full, too many
 * connections), 57 (shut down, cancelled by the server), 58 (I/O) and 25006 (read-only).
 */
export function isStorageFault(error: unknown): boolean {
  const code = postgresErrorCode(error);
  if (code !== undefined) {
    if (CONNECTION_ERRORS.has(code) || code === "25006") return true;
    if (/^[0-9A-Z]{5}$/.test(code)) return ["08", "53", "57", "58"].includes(code.slice(0, 2));
  }
  const message = error instanceof Error ? error.message : "";
  // The driver's own words for a socket it lost, or a connection it could not get in time.
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
    message,
  );
}

/**
 * A failure of the database (see isStorageFault) becomes STORAGE_UNAVAILABLE, answered 503; a
 * duplicate event id, DUPLICATE_EVENT_ID. Anything else is a defect and passes as it is.
 */
export function toPostgresStorageError(error: unknown): unknown {
  if (error instanceof SwarmError) return error;
  const code = postgresErrorCode(error);
  if (code === UNIQUE_VIOLATION && (error as { constraint?: string }).constraint === "event_log_id_key") {
    return new SwarmError(
      "DUPLICATE_EVENT_ID",
      "an event with this id is already in the log",
      { field: "id" },
      { cause: error },
    );
  }
  if (!isStorageFault(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new SwarmError(
    "STORAGE_UNAVAILABLE",
    `the database could not be reached or refused the request (${code ?? message}); it was not acknowledged, so try again`,
    { postgres_code: code ?? "CONNECTION" },
    { cause: error },
  );
}
