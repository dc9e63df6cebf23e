/**
 * `npm run crash | fuzz | soak`: the long runs of the reliability scenarios, each ending in a
 * verdict (exit code 0 when every check held, 1 when any failed) and a Markdown section of
 * figures written to reliability/last-run.md (which the README's "Reliability" section quotes).
 *
 *   npm run crash -- [--kills 25] [--seed N] [--db postgres://…] [--replicas 3]
 *   npm run fuzz  -- [--cases 100000] [--seed N]
 *   npm run soak  -- [--minutes 30] [--tasks-per-minute 240]
 *
 * `--db postgres://…` runs the crash scenario on that PostgreSQL database (the product gets it as
 * SWARM_DB and migrates it) instead of a new SQLite file; give it a database of its own, since
 * the checks read every row in it. Its figures have their own section of last-run.md.
 * `--replicas N` (with `--db`) runs N replicas on that database behind a balancer and kills a
 * random one each time: the cluster's scenario, with a section of its own too.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { describeMachine, round } from "../bench/machine.js";
import { runCrashScenario } from "./crash.js";
import { FUZZ_PROPERTIES } from "./fuzz.js";
import { runSoak, type SoakSample } from "./soak.js";

const REPORT = fileURLToPath(new URL("./last-run.md", import.meta.url));
const say = (line: string) => console.log(line);

interface Outcome {
  /** The section of last-run.md it replaces; default the scenario's name. */
  section?: string;
  title: string;
  /** Markdown lines of figures. */
  figures: string[];
  violations: string[];
}

/** The server's version as it names itself, for the figures (the machine line names SQLite's). */
async function postgresVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ server_version: string }>("SHOW server_version");
    return `PostgreSQL ${rows[0]?.server_version ?? "(version unknown)"}`;
  } finally {
    await client.end();
  }
}

async function crash(values: Record<string, string | undefined>): Promise<Outcome> {
  const kills = Number(values.kills ?? 25);
  const onPostgres = values.db !== undefined;
  const replicas = Number(values.replicas ?? 1);
  const report = await runCrashScenario({
    kills,
    seed: values.seed === undefined ? undefined : Number(values.seed),
    db: values.db,
    replicas,
    progress: say,
  });
  const store = onPostgres ? "database" : "file";
  const engine = onPostgres
    ? [`- on ${await postgresVersion(values.db as string)}, the database server left running`]
    : [];
  const clustered = replicas > 1;
  const cluster = clustered
    ? [
        `- ${replicas} replicas behind a round-robin TCP balancer, the load going through it; each kill took a random replica, and the auctions open at the kill were closed by the others while it was down, the latest ${report.latestCloseMs ?? "(none)"} ms after its deadline (goal: within 1000 ms); then it was started again under its name and rejoined`,
      ]
    : [];
  return {
    section: clustered ? "crash-cluster" : onPostgres ? "crash-postgres" : "crash",
    title: clustered
      ? `Kill -9 of a replica under load, ${replicas} replicas on PostgreSQL (\`npm run crash -- --db postgres://… --replicas ${replicas}\`)`
      : onPostgres
        ? "Kill -9 under load on PostgreSQL (`npm run crash -- --db postgres://…`)"
        : "Kill -9 under load (`npm run crash`)",
    violations: report.violations,
    figures: [
      ...engine,
      ...cluster,
      `- ${report.kills} kills with SIGKILL at random moments (seed ${report.seed}), each followed by a restart on the same ${store}, in ${round(report.durationMs / 1000, 0)} s`,
      `- ${report.requests} requests sent, ${report.acknowledged} acknowledged with a 2xx; every acknowledged request's events found after every kill`,
      `- ${report.events} events and ${report.tasks} tasks in the final ${store}; ${report.interruptedAuctions} auctions were open at a kill, each closed afterwards with the bids it had`,
      `- after each kill: ${onPostgres ? "the seq head at the newest event" : "`PRAGMA integrity_check` ok"}, \`seq\` gapless, no event twice, tables, status counts and log in agreement; after each restart: no task stuck`,
    ],
  };
}

async function fuzz(values: Record<string, string | undefined>): Promise<Outcome> {
  const cases = Number(values.cases ?? 100_000);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  const figures: string[] = [];
  const violations: string[] = [];
  let total = 0;
  for (const property of FUZZ_PROPERTIES) {
    const runs = Math.ceil(cases * property.share);
    const began = Date.now();
    say(`${property.name}: ${runs} cases…`);
    try {
      total += await property.run(runs, seed);
      figures.push(
        `- ${property.name}: ${runs} cases in ${round((Date.now() - began) / 1000, 0)} s, all held`,
      );
    } catch (error) {
      // fast-check's message holds the counterexample and the seed and path to replay it.
      violations.push(
        `${property.name}: ${error instanceof Error ? error.message.slice(0, 2000) : String(error)}`,
      );
    }
  }
  return {
    title: "Hostile input (`npm run fuzz`)",
    violations,
    figures: [
      `- ${total} generated cases (seed ${seed}): never a 5xx, never a crash, errors always in the documented shape, no row written by a refused request, no stored markup shown unescaped`,
      ...figures,
    ],
  };
}

async function soak(values: Record<string, string | undefined>): Promise<Outcome> {
  const minutes = Number(values.minutes ?? 30);
  const tasksPerMinute = Number(values["tasks-per-minute"] ?? 240);
  const report = await runSoak({ durationMs: minutes * 60_000, tasksPerMinute, progress: say });
  const warm = report.samples.filter((s) => s.atMs >= minutes * 60_000 * 0.2);
  const range = (pick: (s: SoakSample) => number) =>
    warm.length === 0 ? "none" : `${Math.min(...warm.map(pick))}–${Math.max(...warm.map(pick))}`;
  const p99s = report.windows.map((w) => w.p99);
  const perMinute = (n: number) => round(n / minutes, 0);
  return {
    title: "Soak (`npm run soak`)",
    violations: report.violations,
    figures: [
      `- ${round(report.durationMs / 60_000, 1)} minutes of the demo swarm (18 agents) against the product in its own process: ${report.tasksPosted} tasks posted (${perMinute(report.tasksPosted)}/min), ${report.tasksCompleted} completed, ${report.tasksFailed} failed, ${report.toolCalls} tool calls, ${report.events} events`,
      `- after the first fifth (warm-up): RSS ${range((s) => s.rssMiB)} MiB (trend ${report.rssSlopeMiBPerHour} MiB/hour), heap ${range((s) => s.heapMiB)} MiB, open handles ${range((s) => s.handles)}`,
      `- event to dashboard page (a live overview, every event): p99 per ${round(minutes / report.windows.length, 1)}-minute window ${Math.min(...p99s)}–${Math.max(...p99s)} ms, p50 ${Math.min(...report.windows.map((w) => w.p50))}–${Math.max(...report.windows.map((w) => w.p50))} ms, worst single event ${Math.max(...report.windows.map((w) => w.max))} ms`,
      `- ${report.prunes.length} scheduled prunes (every minute, retention 1 day) removed ${report.prunes.reduce((s, p) => s + p.deleted, 0)} old events; the longest hold of the event loop by any of them ${Math.max(0, ...report.prunes.map((p) => Math.max(p.longest_delete_ms, p.longest_vacuum_ms)))} ms`,
    ],
  };
}

const SCENARIOS: Record<string, (values: Record<string, string | undefined>) => Promise<Outcome>> = {
  crash,
  fuzz,
  soak,
};

/** Replace this scenario's section of the report, keeping the others'. */
function record(name: string, outcome: Outcome): void {
  const sections = new Map<string, string>();
  if (existsSync(REPORT)) {
    for (const section of readFileSync(REPORT, "utf8").split(/^(?=## )/m)) {
      const key = /<!-- ([\w-]+) -->/.exec(section)?.[1];
      if (key !== undefined) sections.set(key, section.trimEnd());
    }
  }
  const verdict =
    outcome.violations.length === 0 ? "**passed**" : `**failed** (${outcome.violations.length} violations)`;
  sections.set(
    name,
    [
      `## ${outcome.title} <!-- ${name} -->`,
      "",
      `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC on ${describeMachine()}: ${verdict}`,
      "",
      ...outcome.figures,
      ...outcome.violations.slice(0, 20).map((violation) => `- violation: ${violation}`),
    ].join("\n"),
  );
  const order = ["crash", "crash-postgres", "crash-cluster", "faults", "fuzz", "soak"];
  const body = [...sections.entries()]
    .sort(([a], [b]) => order.indexOf(a) - order.indexOf(b))
    .map(([, text]) => text)
    .join("\n\n");
  writeFileSync(REPORT, `# Reliability: the last run of each scenario\n\n${body}\n`);
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    kills: { type: "string" },
    db: { type: "string" },
    replicas: { type: "string" },
    seed: { type: "string" },
    cases: { type: "string" },
    minutes: { type: "string" },
    "tasks-per-minute": { type: "string" },
  },
});
const name = positionals[0] ?? "";
const scenario = SCENARIOS[name];
if (scenario === undefined) {
  console.error(`usage: tsx reliability/run.ts <${Object.keys(SCENARIOS).join("|")}> [options]`);
  process.exit(2);
}
const outcome = await scenario(values);
record(outcome.section ?? name, outcome);
say("");
for (const line of outcome.figures) say(line);
for (const violation of outcome.violations) say(`VIOLATION: ${violation}`);
say(
  outcome.violations.length === 0
    ? `${name}: PASSED`
    : `${name}: FAILED with ${outcome.violations.length} violations`,
);
process.exit(outcome.violations.length === 0 ? 0 : 1);
