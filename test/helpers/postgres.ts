/**
 * A real PostgreSQL for the tests, found through SWARM_TEST_POSTGRES_URL (scripts/test-postgres.sh
 * starts a private one; `.ci/run` does so for CI). Each test gets a database of its own, copied
 * from a template this process migrates once, and dropped after the file. Under CI a missing
 * server fails the tests instead of skipping them.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";
import pg from "pg";
import { migratePostgres } from "../../src/storage/postgres/database.js";

export const POSTGRES_URL = process.env.SWARM_TEST_POSTGRES_URL;
export const havePostgres = POSTGRES_URL !== undefined && POSTGRES_URL !== "";
if (!havePostgres && process.env.CI === "true") {
  throw new Error(
    'the PostgreSQL tests need SWARM_TEST_POSTGRES_URL; start a private server with: eval "$(scripts/test-postgres.sh start)"',
  );
}

function urlFor(database: string): string {
  const url = new URL(POSTGRES_URL as string);
  url.pathname = `/${database}`;
  return url.toString();
}

let admin: pg.Client | undefined;
let template: Promise<string> | undefined;
const created: string[] = [];
let counter = 0;
const prefix = `swarm_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

async function adminClient(): Promise<pg.Client> {
  if (admin === undefined) {
    admin = new pg.Client({ connectionString: POSTGRES_URL });
    await admin.connect();
  }
  return admin;
}

/** The migrated template, made once per test process (copying it is faster than migrating each). */
function migratedTemplate(): Promise<string> {
  template ??= (async () => {
    const client = await adminClient();
    const name = `${prefix}_template`;
    await client.query(`CREATE DATABASE ${name}`);
    created.push(name);
    const pool = new pg.Pool({ connectionString: urlFor(name), max: 1 });
    try {
      await migratePostgres(pool);
    } finally {
      await pool.end();
    }
    return name;
  })();
  return template;
}

/** A fresh, migrated database of its own: its URL. `migrated: false` gives an empty one. */
export async function createTestDatabase({ migrated = true } = {}): Promise<string> {
  if (!havePostgres) throw new Error("SWARM_TEST_POSTGRES_URL is not set");
  const client = await adminClient();
  const name = `${prefix}_${(counter += 1)}`;
  const from = migrated ? await migratedTemplate() : "template0";
  await client.query(`CREATE DATABASE ${name} TEMPLATE ${from}`);
  created.push(name);
  return urlFor(name);
}

/**
 * Drop a test's database once its connections have gone. `pool.end()` resolves before its
 * clients' sockets have closed; forcing them off then (`WITH (FORCE)`) makes each of those
 * clients raise "terminating connection due to administrator command" as an uncaught error in
 * the test process. So the drop is tried plainly for a while first, and forced only after.
 */
async function dropWhenLeft(client: pg.Client, name: string): Promise<void> {
  for (let waited = 0; waited < 2000; waited += 50) {
    try {
      await client.query(`DROP DATABASE IF EXISTS ${name}`);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== "55006") return; // 55006: in use by other sessions
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
}

afterAll(async () => {
  if (admin === undefined) return;
  // Newest first: the template goes last, once no copy is being made of it.
  for (const name of created.splice(0).reverse()) await dropWhenLeft(admin, name);
  await admin.end();
  admin = undefined;
  template = undefined;
});

const SCRIPT = fileURLToPath(new URL("../../scripts/test-postgres.sh", import.meta.url));

export interface PrivatePostgres {
  /** The server's maintenance database; create others from it. */
  url: string;
  /** Stop it at once, as a crash would, keeping its data. */
  halt(): void;
  /** Start it again, on the same port. */
  resume(): void;
  /** Stop it for good and remove its folder. */
  remove(): void;
}

/**
 * A PostgreSQL server of the test's own, for tests that stop and restart the database (the
 * shared one must stay up for the others). Takes a few seconds to start.
 */
export function startPrivatePostgres(): PrivatePostgres {
  const state = join(mkdtempSync(join(tmpdir(), "swarm-pg-state-")), "state.env");
  const env = { ...process.env, TEST_POSTGRES_STATE: state };
  const run = (command: string) => execFileSync("bash", [SCRIPT, command], { env, encoding: "utf8" });
  const url = /SWARM_TEST_POSTGRES_URL=(\S+)/.exec(run("start"))?.[1];
  if (url === undefined) throw new Error("scripts/test-postgres.sh start printed no URL");
  return {
    url,
    halt: () => void run("halt"),
    resume: () => void run("resume"),
    remove: () => void run("stop"),
  };
}
