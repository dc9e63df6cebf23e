/**
 * The demo swarm: agents with distinct profiles and a steady stream of varied tasks, so the
 * dashboard has auctions, assignments, tool calls, completions and the odd failure within
 * seconds. The agents and the task source use only the public HTTP and stream API, exactly as
 * remote workers do.
 */
import { join } from "node:path";
import { delay, SwarmAgent, type TaskHandler } from "./agent.js";
import { SwarmClient } from "./client.js";
import { adaptiveStrategy, matchStrategy } from "./strategies.js";
import type { Logger } from "../logger.js";

interface Profile {
  name: string;
  capabilities: string[];
  baseSats: number;
  keywords: string[];
  tools: string[];
  workMs: number;
  failRate: number;
  adaptive?: boolean;
}

export const DEMO_PROFILES: Profile[] = [
  {
    name: "ada-research",
    capabilities: ["search", "summarize"],
    baseSats: 120,
    keywords: ["research", "compare", "find", "sources"],
    tools: ["web.search", "web.fetch", "text.summarize"],
    workMs: 2500,
    failRate: 0.05,
  },
  {
    name: "linus-code",
    capabilities: ["code", "python"],
    baseSats: 220,
    keywords: ["code", "bug", "test", "refactor"],
    tools: ["repo.read", "python.run", "tests.run"],
    workMs: 3500,
    failRate: 0.12,
  },
  {
    name: "orwell-writing",
    capabilities: ["write", "summarize"],
    baseSats: 90,
    keywords: ["write", "draft", "summary", "email"],
    tools: ["text.draft", "text.edit"],
    workMs: 2000,
    failRate: 0.03,
  },
  {
    name: "tukey-data",
    capabilities: ["data", "sql", "python"],
    baseSats: 160,
    keywords: ["data", "sql", "chart", "metrics"],
    tools: ["sql.query", "python.run", "chart.render"],
    workMs: 3000,
    failRate: 0.08,
  },
  {
    name: "hopper-ops",
    capabilities: ["ops", "deploy"],
    baseSats: 150,
    keywords: ["deploy", "incident", "logs", "restart"],
    tools: ["logs.search", "shell.exec"],
    workMs: 2000,
    failRate: 0.1,
  },
  {
    name: "jack-of-all",
    capabilities: [],
    baseSats: 260,
    keywords: [],
    tools: ["web.search", "text.draft"],
    workMs: 3000,
    failRate: 0.15,
    adaptive: true,
  },
];

export const DEMO_TASKS: { description: string; required_capabilities?: string[] }[] = [
  {
    description: "Research and compare three open-source vector databases",
    required_capabilities: ["search"],
  },
  {
    description: "Summarise yesterday's incident report for the weekly update",
    required_capabilities: ["summarize"],
  },
  { description: "Fix the flaky date-parsing test in the billing service", required_capabilities: ["code"] },
  { description: "Write a release email for version 2.4", required_capabilities: ["write"] },
  {
    description: "Query last month's signups by region and chart them",
    required_capabilities: ["data", "sql"],
  },
  {
    description: "Deploy the payments service to staging and watch the logs",
    required_capabilities: ["deploy"],
  },
  { description: "Refactor the CSV exporter and add tests", required_capabilities: ["python"] },
  { description: "Find sources on sealed-bid auction theory for the design doc" },
  { description: "Draft a summary of the customer interviews" },
  {
    description: "Compute p95 latency per endpoint from the metrics export",
    required_capabilities: ["data"],
  },
  {
    description: "Search the logs for the 502 spike at 14:00 and explain it",
    required_capabilities: ["ops"],
  },
  { description: "Translate the onboarding guide's headings into plain English" },
];

function profileHandler(profile: Profile, random: () => number = Math.random): TaskHandler {
  return async ({ task, tool, signal }) => {
    const steps = profile.tools.slice(0, 1 + Math.floor(random() * profile.tools.length));
    for (const name of steps) {
      await tool(name, { task: task.description.slice(0, 80) }, () =>
        delay((profile.workMs / steps.length) * (0.5 + random()), signal),
      );
    }
    if (random() < profile.failRate)
      throw new Error(`${profile.name} could not finish: ${steps.at(-1) ?? "work"} timed out`);
    return `${profile.name}: done "${task.description.slice(0, 60)}" using ${steps.join(", ")}`;
  };
}

export interface DemoSwarm {
  agents: SwarmAgent[];
  /**
   * Stop posting, withdraw (cancel) the demo's own tasks still in auction, stop the agents (tasks
   * in hand get their grace, then are handed back), and withdraw what they handed back: with the
   * swarm gone nobody would bid, and the tasks would fail with "no bids".
   */
  stop(): Promise<void>;
}

/** The demo's agents give tasks in hand this long to finish on a stop: most demo tasks take 1-5 s. */
export const DEMO_STOP_GRACE_MS = 4000;
/** Task ids the demo remembers having posted, newest last: far more than can be in auction at once. */
const REMEMBERED_TASKS = 1000;

/** Start the demo agents and the task source against a running server. */
export async function startDemoSwarm(options: {
  server: string;
  apiKey?: string;
  /** Keeps the agents' identities between runs; none for a throwaway database. */
  identityDir?: string;
  taskEveryMs?: number;
  /** Agents of each profile (default 1), for a swarm that keeps up with a faster stream of tasks. */
  agentsPerProfile?: number;
  /** How long the agents let tasks in hand finish on a stop (default DEMO_STOP_GRACE_MS). */
  stopGraceMs?: number;
  logger?: Logger;
}): Promise<DemoSwarm> {
  const copies = options.agentsPerProfile ?? 1;
  const roster = DEMO_PROFILES.flatMap((profile) =>
    Array.from({ length: copies }, (_, i) => ({
      profile,
      name: copies === 1 ? profile.name : `${profile.name}-${i + 1}`,
    })),
  );
  const agents = roster.map(({ profile, name }) => {
    const strategyOptions = { baseSats: profile.baseSats, keywords: profile.keywords, jitter: 0.15 };
    return new SwarmAgent({
      server: options.server,
      name,
      capabilities: profile.capabilities,
      maxConcurrent: 2,
      apiKey: options.apiKey,
      identityFile: options.identityDir === undefined ? undefined : join(options.identityDir, `${name}.json`),
      strategy: profile.adaptive ? adaptiveStrategy(strategyOptions) : matchStrategy(strategyOptions),
      handler: profileHandler(profile),
      heartbeatMs: 5000,
      stopGraceMs: options.stopGraceMs ?? DEMO_STOP_GRACE_MS,
      logger: options.logger?.child({ agent: name }),
    });
  });
  await Promise.all(agents.map((agent) => agent.start()));
  const operator = new SwarmClient(
    options.server,
    options.apiKey === undefined ? {} : { token: options.apiKey },
  );
  let next = Math.floor(Math.random() * DEMO_TASKS.length);
  const posted = new Set<string>();
  const posting = new Set<Promise<void>>();
  const post = () => {
    const template = DEMO_TASKS[next % DEMO_TASKS.length]!;
    next += 1 + Math.floor(Math.random() * 3);
    const sent: Promise<void> = operator
      .request<{ task: { id: string } }>("POST", "/api/tasks", {
        ...template,
        auction_ms: 1500 + Math.floor(Math.random() * 1500),
      })
      .then(({ task }) => {
        posted.add(task.id);
        if (posted.size > REMEMBERED_TASKS) posted.delete(posted.values().next().value!);
      })
      .catch((error: unknown) => options.logger?.warn({ err: error }, "demo could not post a task"))
      .finally(() => posting.delete(sent));
    posting.add(sent);
  };
  /** Cancel the demo's own tasks that are in auction (only those: others' tasks are theirs). */
  const withdraw = async () => {
    try {
      const open = await operator.listTasks({ status: "bidding", limit: 200 });
      await Promise.all(
        open
          .filter((task) => posted.has(task.id))
          .map(
            (task) =>
              operator
                .request("POST", `/api/tasks/${encodeURIComponent(task.id)}/cancel`, {
                  reason: "the demo stopped",
                })
                .catch(() => undefined), // closed meanwhile: nothing to withdraw
          ),
      );
    } catch (error) {
      options.logger?.warn({ err: error }, "demo could not withdraw its open tasks");
    }
  };
  post();
  const timer = setInterval(post, options.taskEveryMs ?? 2000);
  timer.unref();
  return {
    agents,
    async stop() {
      clearInterval(timer);
      await Promise.all(posting); // a task posted as the stop began is withdrawn too
      await withdraw();
      await Promise.all(agents.map((agent) => agent.stop()));
      await withdraw();
    },
  };
}
