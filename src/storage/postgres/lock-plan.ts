/**
 * Which rows a batch of commands locks before it reads what it decides on, so that replicas on
 * one database can decide at the same time without deciding on a state another is changing.
 *
 * The order is fixed for every transaction: tasks first, then agents, each set in id order (one
 * `SELECT … ORDER BY id FOR UPDATE`), and the event log's head row last, as the events are
 * appended. Waits therefore never form a cycle. The only locks taken out of that order are
 * SKIP LOCKED ones (the Tick's claims, retention), which never wait.
 *
 * What a command changes, and so locks:
 * - its task (`task_id`), and the agent it names (`agent_id`);
 * - the agent holding that task (its load changes when the task ends or is put up again);
 * - for an operator's close, every agent that bid in the task's open round (the auction closes
 *   to one of them: the winner's load and status change). A bid locks only its task and its
 *   bidder: it closes the auction only when it is the last eligible bid, rarely, and then the
 *   winner it reaches is missed and locked on the retry. Locking every bidder for every bid made
 *   each bid on a crowded auction lock most of the swarm's agent rows, and bids on different
 *   auctions queue on one another;
 * - for an agent that leaves, the tasks it holds (they go up for auction again);
 * - the dependencies a posted task (or a re-run) names, whose status it reads: locked, no
 *   dependency can end while a new dependent on it is being written;
 * - the waiting tasks that depend, directly or not, on any task locked (a task that ends opens or
 *   cancels them). They are read before the locks and again once held: a dependent posted in
 *   between is a missed row, and the batch is tried again with it;
 * - for Recover, every agent online.
 * The plan reads some of this before it holds the locks (the tasks an agent holds); what it read
 * is checked again once the locks are held, and a batch whose decision reaches past its plan is
 * tried again with a fuller one (PlanMissed): a missed row costs a retry, never a lost update.
 */
import type pg from "pg";
import type { Command } from "../../coordinator/types.js";

export interface LockedRows {
  tasks: ReadonlySet<string>;
  agents: ReadonlySet<string>;
}

/** Rows an earlier try of the batch found it needed: locked from the start on the next. */
export interface PlanHints {
  tasks: Set<string>;
  agents: Set<string>;
}

/** A decision reached rows its batch did not lock: try again with them. */
export class PlanMissed extends Error {
  constructor(
    readonly tasks: readonly string[],
    readonly agents: readonly string[],
  ) {
    super(`rows outside the lock plan: tasks [${tasks.join(", ")}], agents [${agents.join(", ")}]`);
    this.name = "PlanMissed";
  }
}

/** Most due auctions one Tick claims: the rest are the next Tick's (or another replica's). */
const TICK_CLAIM_LIMIT = 500;
/** How long past its deadline an auction may be skipped for a lock before a Tick waits for it. */
const OVERDUE_WAIT_MS = 300;

const SQL = {
  heldBy:
    "SELECT id, assigned_agent FROM tasks WHERE assigned_agent = ANY($1) AND status IN ('assigned', 'running')",
  lockTasks: "SELECT id, assigned_agent FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
  lockAgents: "SELECT id FROM agents WHERE id = ANY($1) ORDER BY id FOR UPDATE",
  bidders:
    "SELECT DISTINCT b.agent_id FROM tasks t JOIN bids b ON b.task_id = t.id AND b.attempt = t.attempt " +
    "WHERE t.id = ANY($1) AND t.status IN ('bidding', 'assigned')",
  online: "SELECT id FROM agents WHERE left_at IS NULL AND status <> 'offline'",
  // Every timed step by one index: auctions closing, awards lapsing, runs timing out, retries opening.
  claimDue:
    "SELECT id FROM tasks WHERE due_at <= $1 " +
    `ORDER BY due_at LIMIT ${TICK_CLAIM_LIMIT} FOR UPDATE SKIP LOCKED`,
  // Overdue past OVERDUE_WAIT_MS: waited for, in id order like every task lock. A row skipped
  // tick after tick (late bids keep locking it, each to be refused) would otherwise close late.
  claimOverdue:
    "SELECT id FROM tasks WHERE due_at <= $1 " + `ORDER BY id LIMIT ${TICK_CLAIM_LIMIT} FOR UPDATE`,
  holders:
    "SELECT DISTINCT assigned_agent AS id FROM tasks WHERE id = ANY($1) AND assigned_agent IS NOT NULL",
  // Silent past the timeout (the core then subtracts the server's stalls), or offline since a
  // restart with the grace period over and tasks still held.
  silentAgents:
    "SELECT a.id FROM agents a WHERE a.left_at IS NULL AND ((a.status <> 'offline' AND a.last_seen <= $1) " +
    "OR (a.status = 'offline' AND (a.grace_until IS NULL OR a.grace_until <= $2) AND EXISTS (" +
    "SELECT 1 FROM tasks t WHERE t.assigned_agent = a.id AND t.status IN ('assigned', 'running'))))",
  claimTasks: "SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
  dependents:
    "SELECT t.id, d.dependency FROM tasks t, jsonb_array_elements_text(t.waiting_on::jsonb) AS d(dependency) " +
    "WHERE t.status = 'waiting' AND t.waiting_on::jsonb ?| $1::text[] AND d.dependency = ANY($1::text[])",
  dependenciesOf: "SELECT depends_on FROM tasks WHERE id = $1",
  claimAgents: "SELECT id FROM agents WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
} as const;

async function ids(client: pg.ClientBase, sql: string, params: unknown[]): Promise<string[]> {
  return (await client.query<{ id: string }>(sql, params)).rows.map((row) => row.id);
}

async function heldBy(client: pg.ClientBase, agentIds: readonly string[]): Promise<Map<string, string[]>> {
  const held = new Map<string, string[]>();
  if (agentIds.length === 0) return held;
  const rows = (await client.query<{ id: string; assigned_agent: string }>(SQL.heldBy, [agentIds])).rows;
  for (const row of rows) held.set(row.assigned_agent, [...(held.get(row.assigned_agent) ?? []), row.id]);
  return held;
}

/**
 * The waiting tasks that wait, directly or through others, on any of `taskIds`: each task's
 * dependents, all the way down (a task that ends may cancel a chain).
 */
async function dependencyGraph(
  client: pg.ClientBase,
  taskIds: Iterable<string>,
): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  let frontier = [...new Set(taskIds)];
  while (frontier.length > 0) {
    const rows = (await client.query<{ id: string; dependency: string }>(SQL.dependents, [frontier])).rows;
    const next: string[] = [];
    for (const { id, dependency } of rows) {
      graph.set(dependency, [...(graph.get(dependency) ?? []), id]);
      if (!graph.has(id)) next.push(id);
    }
    for (const id of frontier) if (!graph.has(id)) graph.set(id, []);
    frontier = [...new Set(next)].filter((id) => !graph.has(id));
  }
  return graph;
}

/** Every task reachable from `roots` in `graph`, the roots left out. */
function downstream(graph: ReadonlyMap<string, readonly string[]>, roots: Iterable<string>): Set<string> {
  const found = new Set<string>();
  const stack = [...roots];
  for (let id = stack.pop(); id !== undefined; id = stack.pop()) {
    for (const dependent of graph.get(id) ?? []) {
      if (found.has(dependent)) continue;
      found.add(dependent);
      stack.push(dependent);
    }
  }
  return found;
}

async function dependentsOf(client: pg.ClientBase, taskIds: Iterable<string>): Promise<Set<string>> {
  const roots = [...taskIds];
  return downstream(await dependencyGraph(client, roots), roots);
}

/** The dependents of `tasks` that are not locked: what a plan missed, once its locks are held. */
async function unlockedDependents(client: pg.ClientBase, tasks: ReadonlySet<string>): Promise<string[]> {
  return [...(await dependentsOf(client, tasks))].filter((id) => !tasks.has(id));
}

async function biddersOf(client: pg.ClientBase, taskIds: readonly string[]): Promise<string[]> {
  if (taskIds.length === 0) return [];
  return (await client.query<{ agent_id: string }>(SQL.bidders, [taskIds])).rows.map((row) => row.agent_id);
}

/** Lock what `commands` may change (see the file's comment), in the fixed order. */
export async function lockPlan(
  client: pg.ClientBase,
  commands: readonly Command[],
  hints: PlanHints,
): Promise<LockedRows> {
  const taskIds = new Set(hints.tasks);
  const agentIds = new Set(hints.agents);
  const leaving: string[] = [];
  let recover = false;
  const closing: string[] = [];
  for (const command of commands) {
    if ("task_id" in command) taskIds.add(command.task_id);
    if (command.type === "CloseAuction") closing.push(command.task_id);
    if ("agent_id" in command && command.agent_id !== undefined) agentIds.add(command.agent_id);
    if (command.type === "PostTask" && command.assign_to !== undefined) agentIds.add(command.assign_to);
    if (command.type === "DeregisterAgent") leaving.push(command.agent_id);
    if (command.type === "Recover") recover = true;
    if (command.type === "PostTask" && Array.isArray(command.depends_on))
      for (const id of command.depends_on) if (typeof id === "string") taskIds.add(id);
    if (command.type === "RetryTask") {
      const [row] = (await client.query<{ depends_on: string }>(SQL.dependenciesOf, [command.task_id])).rows;
      for (const id of row === undefined ? [] : (JSON.parse(row.depends_on) as string[])) taskIds.add(id);
    }
  }
  const heldBefore = await heldBy(client, leaving);
  for (const held of heldBefore.values()) for (const id of held) taskIds.add(id);
  for (const id of await dependentsOf(client, taskIds)) taskIds.add(id);

  const tasks = new Set<string>();
  if (taskIds.size > 0) {
    const rows = (
      await client.query<{ id: string; assigned_agent: string | null }>(SQL.lockTasks, [[...taskIds]])
    ).rows;
    for (const row of rows) {
      tasks.add(row.id);
      if (row.assigned_agent !== null) agentIds.add(row.assigned_agent);
    }
  }
  for (const id of await biddersOf(client, closing)) agentIds.add(id);
  if (recover) for (const id of await ids(client, SQL.online, [])) agentIds.add(id);
  const agents = new Set(agentIds.size === 0 ? [] : await ids(client, SQL.lockAgents, [[...agentIds]]));

  // With the leaving agents locked, nothing can hand them another task: what they hold now is
  // what the decision sees. A task assigned since the first read is in no lock yet.
  const missed = [...(await heldBy(client, leaving)).values()].flat().filter((id) => !tasks.has(id));
  missed.push(...(await unlockedDependents(client, tasks)));
  if (missed.length > 0) throw new PlanMissed(missed, []);
  return { tasks, agents };
}

export interface TickClaim extends LockedRows {
  /** The silent agents this Tick may set offline: locked, with every task they hold locked. */
  scopeAgents: string[];
}

/**
 * Claim the Tick's work at `now`: the due auctions no other replica is closing, and the agents
 * past their heartbeat that no other replica is expiring, each with the tasks it holds. The
 * claims skip what is locked (another replica's Tick, or a command on that row); the bidders of
 * a claimed auction are waited for, in order, since one of them will win it.
 */
export async function claimTick(
  client: pg.ClientBase,
  now: Date,
  heartbeatTimeoutMs: number,
  hints: PlanHints = { tasks: new Set(), agents: new Set() },
): Promise<TickClaim> {
  const overdue = await ids(client, SQL.claimOverdue, [
    new Date(now.getTime() - OVERDUE_WAIT_MS).toISOString(),
  ]);
  const due = [...new Set([...overdue, ...(await ids(client, SQL.claimDue, [now.toISOString()]))])];
  const silent = await ids(client, SQL.silentAgents, [
    new Date(now.getTime() - heartbeatTimeoutMs).toISOString(),
    now.toISOString(),
  ]);
  const tasks = new Set(due);
  const heldBefore = await heldBy(client, silent);
  const wanted = [...heldBefore.values()].flat();
  const claimedHeld = new Set(wanted.length === 0 ? [] : await ids(client, SQL.claimTasks, [wanted]));
  for (const id of claimedHeld) tasks.add(id);
  // What the claimed steps may end has dependents. They are claimed like the rest (SKIP LOCKED:
  // a command ending one of them locks it before the task it waits on, so waiting here could
  // close a cycle); a claimed task whose dependents are not all ours is left for the next Tick.
  const graph = await dependencyGraph(client, tasks);
  const wantedDependents = [...downstream(graph, tasks), ...hints.tasks].filter((id) => !tasks.has(id));
  if (wantedDependents.length > 0) {
    for (const id of await ids(client, SQL.claimTasks, [wantedDependents])) tasks.add(id);
    for (const id of [...tasks])
      if ([...downstream(graph, [id])].some((dependent) => !tasks.has(dependent))) tasks.delete(id);
  }
  // A dependent posted between the read and the claims is a missed row: tried again with it.
  const missedDependents = await unlockedDependents(client, tasks);
  if (missedDependents.length > 0) throw new PlanMissed(missedDependents, []);
  // An agent whose tasks someone else holds now is left for the next Tick.
  const candidates = silent.filter((id) => (heldBefore.get(id) ?? []).every((task) => claimedHeld.has(task)));

  // The agents a due step may hand the task to (its round's bidders) or take it from (its
  // holder), and those an earlier try found it reaching.
  const stepping = [...tasks];
  const bidders = [
    ...new Set([
      ...(await biddersOf(client, stepping)),
      ...(stepping.length === 0 ? [] : await ids(client, SQL.holders, [stepping])),
      ...hints.agents,
    ]),
  ];
  const agents = new Set(bidders.length === 0 ? [] : await ids(client, SQL.lockAgents, [bidders]));
  const unclaimed = candidates.filter((id) => !agents.has(id));
  if (unclaimed.length > 0) for (const id of await ids(client, SQL.claimAgents, [unclaimed])) agents.add(id);

  const heldNow = await heldBy(client, candidates);
  const scopeAgents = candidates.filter(
    (id) => agents.has(id) && (heldNow.get(id) ?? []).every((task) => tasks.has(task)),
  );
  return { tasks, agents, scopeAgents };
}
