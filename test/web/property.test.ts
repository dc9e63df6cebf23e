/**
 * Generated hostile input against the whole app, a few hundred cases per property in every
 * test run (FUZZ_RUNS to change; FUZZ_SEED to repeat a run), on each engine (on PostgreSQL a
 * database of its own per property). `npm run fuzz` runs 100,000. The properties themselves
 * live in reliability/fuzz.ts.
 */
import { describe, it } from "vitest";
import { fuzzApi, fuzzPages, fuzzSockets, fuzzStoredText } from "../../reliability/fuzz.js";
import { ENGINES } from "../helpers/engines.js";
import { createTestDatabase } from "../helpers/postgres.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 600);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

describe.each(ENGINES)("hostile input on $name", ({ name: engine }) => {
  /** Where a property's app stores: SQLite in memory, or a new PostgreSQL database. */
  const db = async () => (engine === "postgres" ? createTestDatabase() : undefined);

  it("every API route: never a 5xx, errors in the documented shape, nothing written when refused", async () => {
    await fuzzApi(RUNS * 2, SEED, await db());
  }, 180_000);

  it("every dashboard page and form: never a 5xx, refusals as HTML, nothing written when refused", async () => {
    await fuzzPages(RUNS, SEED, await db());
  }, 180_000);

  it("both websockets: any handshake and any frames end in an orderly close, never a crash or a write", async () => {
    await fuzzSockets(Math.ceil(RUNS / 3), SEED, await db());
  }, 180_000);

  it("stored markup in names, descriptions and reasons is escaped on every page that shows it", async () => {
    await fuzzStoredText(Math.ceil(RUNS / 20), SEED, await db());
  }, 180_000);
});
