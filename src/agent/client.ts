/**
 * The coordinator's public HTTP API, as an agent uses it. Nothing here reaches into the
 * server's process: a demo agent and a worker on another machine take the same path.
 */

export interface TaskView {
  id: string;
  description: string;
  status: string;
  required_capabilities: string[];
  max_bid_sats: number | null;
  attempt: number;
  assigned_agent: string | null;
  auction_closes_at: string | null;
  /** How long a run may take before the coordinator times it out (the handler's signal aborts). */
  timeout_ms?: number | null;
  /** Attempts the task gets, and how many failed so far. */
  max_attempts?: number;
  failures?: number;
  retry_of?: string | null;
  /** Tasks that had to complete before this one's auction opened. */
  depends_on?: string[];
  /** What a task produced (shown to the agent that ran it, and to the runner of a dependent). */
  result?: string | null;
}

export interface AgentIdentity {
  id: string;
  token: string;
}

/** An answer from the server other than a success, with its stable code. */
export class SwarmApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** How long the server asked the caller to wait (its Retry-After), when it said. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "SwarmApiError";
  }
}

/** Retry-After in milliseconds: delay-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export class SwarmClient {
  readonly server: string;

  constructor(
    server: string,
    private readonly options: { token?: string; requestTimeoutMs?: number } = {},
  ) {
    this.server = server.replace(/\/+$/, "");
  }

  withToken(token: string): SwarmClient {
    return new SwarmClient(this.server, { ...this.options, token });
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(`${this.server}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 15_000),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? {} : JSON.parse(text);
    } catch {
      throw new SwarmApiError(
        response.status,
        "BAD_RESPONSE",
        `${method} ${path}: the server answered ${response.status} with non-JSON`,
      );
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: unknown; message?: unknown } }).error;
      throw new SwarmApiError(
        response.status,
        typeof error?.code === "string" ? error.code : "HTTP_ERROR",
        `${method} ${path}: ${typeof error?.message === "string" ? error.message : `HTTP ${response.status}`}`,
        retryAfterMs(response.headers.get("retry-after")),
      );
    }
    return parsed as T;
  }

  /** Register an agent (needs the operator key when the server has one). */
  async register(body: {
    name: string;
    capabilities: string[];
    max_concurrent: number;
  }): Promise<AgentIdentity> {
    const { agent, token } = await this.request<{ agent: { id: string }; token: string }>(
      "POST",
      "/api/agents",
      body,
    );
    return { id: agent.id, token };
  }

  async getAgent(id: string): Promise<{ id: string; status: string; left_at: string | null }> {
    return (
      await this.request<{ agent: { id: string; status: string; left_at: string | null } }>(
        "GET",
        `/api/agents/${encodeURIComponent(id)}`,
      )
    ).agent;
  }

  heartbeat(id: string): Promise<unknown> {
    return this.request("POST", `/api/agents/${encodeURIComponent(id)}/heartbeat`);
  }

  deregister(id: string): Promise<unknown> {
    return this.request("DELETE", `/api/agents/${encodeURIComponent(id)}`);
  }

  async getTask(id: string): Promise<TaskView> {
    return (await this.request<{ task: TaskView }>("GET", `/api/tasks/${encodeURIComponent(id)}`)).task;
  }

  /** The tasks `id` depends on, results included for the agent that runs it. */
  async dependencies(id: string): Promise<TaskView[]> {
    return (
      await this.request<{ dependencies: TaskView[] }>(
        "GET",
        `/api/tasks/${encodeURIComponent(id)}/dependencies`,
      )
    ).dependencies;
  }

  /**
   * Tasks matching the query, newest first, one at a time: a page (of `limit`, at most 200) is
   * read whenever the one before is used up, following `next_cursor` to the end.
   */
  async *eachTask(query: { status?: string; agent_id?: string; limit?: number }): AsyncGenerator<TaskView> {
    let cursor: string | null | undefined;
    do {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query))
        if (value !== undefined) params.set(key, String(value));
      if (cursor !== undefined && cursor !== null) params.set("cursor", cursor);
      const page = await this.request<{ tasks: TaskView[]; next_cursor?: string | null }>(
        "GET",
        `/api/tasks?${params.toString()}`,
      );
      yield* page.tasks;
      // A server from before pages had cursors answers none: its one page was all there was.
      cursor = page.next_cursor;
    } while (typeof cursor === "string");
  }

  /** Every task matching the query, newest first, read page by page (`limit` is the page size). */
  async listTasks(query: { status?: string; agent_id?: string; limit?: number }): Promise<TaskView[]> {
    const tasks: TaskView[] = [];
    for await (const task of this.eachTask(query)) tasks.push(task);
    return tasks;
  }

  bid(taskId: string, bidSats: number): Promise<unknown> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/bids`, { bid_sats: bidSats });
  }

  start(taskId: string): Promise<unknown> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/start`);
  }

  complete(taskId: string, result: string): Promise<unknown> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/complete`, { result });
  }

  /** Hand the task back unfinished: it is auctioned again, not failed. */
  release(taskId: string, reason: string): Promise<unknown> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/release`, { reason });
  }

  fail(taskId: string, reason: string): Promise<unknown> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/fail`, { reason });
  }

  tool(
    taskId: string,
    report: {
      tool: string;
      phase: "called" | "completed" | "failed";
      call_id: string;
      input?: unknown;
      output?: unknown;
      error?: string;
    },
  ): Promise<unknown> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(taskId)}/tools`, report);
  }
}
