/** Running the real server in its own process for a benchmark, and driving it over loopback. */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import type { SqliteEventLog } from "../src/storage/sqlite/event-log.js";

/** The operator key the benchmarks give the product. */
export const BENCH_KEY = "bench-operator-key-0123456789abcdef";
export const PRODUCT = fileURLToPath(new URL("../src/server.ts", import.meta.url));

export interface Running {
  child: ChildProcess;
  url: string;
}

/** A port free on loopback right now (the server is told to use it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Start `script` and wait until its /healthz answers; `port` defaults to a free one. */
export async function start(script: string, env: Record<string, string>, port?: number): Promise<Running> {
  port ??= await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", script], {
    env: { ...process.env, PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  child.stdout.resume();
  const url = `http://127.0.0.1:${port}`;
  for (let waited = 0; ; waited += 50) {
    if (child.exitCode !== null) throw new Error(`${script} exited with ${child.exitCode}`);
    if (waited > 30_000) throw new Error(`${script} did not start`);
    const up = await fetch(`${url}/healthz`).then(
      (response) => response.status < 500,
      () => false,
    );
    if (up) return { child, url };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export async function stop(running: Running): Promise<void> {
  const exited = new Promise((resolve) => running.child.once("exit", resolve));
  running.child.kill("SIGTERM");
  await exited;
}

/**
 * The server's Prometheus figures as they stand now: `read(name)` gives a metric's value,
 * summed over its labels (NaN when the server has no such metric).
 */
export async function readMetrics(url: string): Promise<(name: string) => number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return (name) => {
    const values = [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))];
    return values.length === 0 ? Number.NaN : values.reduce((sum, match) => sum + Number(match[1]), 0);
  };
}

export async function api<T>(url: string, method: string, token: string, body?: unknown): Promise<T> {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

export function run(options: autocannon.Options): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    autocannon(options, (error, result) =>
      error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(result),
    );
  });
}

/**
 * The product (`npm start`) on a fresh database in a temporary folder, with BENCH_KEY and no
 * rate limit; `env` adds or overrides settings. `close()` stops it and removes the folder.
 */
export async function startProduct(
  name: string,
  env: Record<string, string>,
): Promise<Running & { close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), `swarm-bench-${name}-`));
  // SWARM_BENCH_SERVER: another checkout's src/server.ts, to measure two versions side by side.
  const server = await start(process.env.SWARM_BENCH_SERVER ?? PRODUCT, {
    SWARM_DB: join(dir, "swarm.db"),
    SWARM_API_KEY: BENCH_KEY,
    SWARM_RATE_LIMIT: "0",
    LOG_LEVEL: "warn",
    ...env,
  });
  return {
    ...server,
    async close() {
      await stop(server);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Register `count` agents through the API; `body(i)` gives each one's fields. */
export async function registerAgents(
  url: string,
  count: number,
  body: (i: number) => object,
): Promise<{ id: string; token: string }[]> {
  const agents: { id: string; token: string }[] = [];
  for (let i = 0; i < count; i += 1) {
    const { agent, token } = await api<{ agent: { id: string }; token: string }>(
      `${url}/api/agents`,
      "POST",
      BENCH_KEY,
      body(i),
    );
    agents.push({ id: agent.id, token });
  }
  return agents;
}

/** Wait until the log's search worker has indexed every event it holds. */
export async function waitForSearchIndex(log: SqliteEventLog): Promise<void> {
  while (log.searchIndexedThrough() !== log.latestSeq()) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
