/**
 * Credentials. Agents get a token at registration, shown once and stored only as its SHA-256;
 * the operator uses SWARM_API_KEY. Every request is resolved to who is calling before any
 * route runs; routes then say who may call them.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { SwarmError } from "../errors.js";
import type { ServerStorePort, StorageEngine } from "../storage/port.js";

export type Caller =
  | { kind: "operator" }
  | { kind: "agent"; agentId: string }
  | { kind: "anonymous" }
  /** Credentials were sent but are wrong; refused by the route's guard (see app.ts for why not earlier). */
  | { kind: "invalid"; problem: SwarmError };

declare module "fastify" {
  interface FastifyRequest {
    caller: Caller;
  }
}

export function newAgentToken(): string {
  return `swarm_${randomBytes(32).toString("base64url")}`;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/**
 * Which agent a token belongs to. On SQLite (one process holds the file) answers are cached: a
 * token stops working when its agent deregisters or rotates it, and the events that say so
 * (`agent.left`, `agent.token_rotated`) drop its entries right after the commit that removed the
 * rows (see app.ts). On PostgreSQL another replica may revoke a token at any moment, so every
 * lookup asks the database (one primary-key read) and nothing can disagree with it.
 */
export class TokenStore {
  private readonly cache: Map<string, string> | undefined;

  constructor(
    private readonly store: ServerStorePort,
    engine: StorageEngine,
  ) {
    this.cache = engine === "sqlite" ? new Map() : undefined;
  }

  /** Forget cached tokens of the agent, so the next request looks them up again. */
  forget(agentId: string): void {
    if (this.cache === undefined) return;
    for (const [tokenHash, cachedAgent] of this.cache) {
      if (cachedAgent === agentId) this.cache.delete(tokenHash);
    }
  }

  async agentFor(tokenHash: string): Promise<string | undefined> {
    const cached = this.cache?.get(tokenHash);
    if (cached !== undefined) return cached;
    const agentId = await this.store.agentForToken(tokenHash);
    if (agentId !== undefined) this.cache?.set(tokenHash, agentId);
    return agentId;
  }
}

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (match === null) throw new SwarmError("UNAUTHORIZED", "Authorization must be 'Bearer <token>'");
  return match[1];
}

export interface AuthOptions {
  /** SHA-256 of SWARM_API_KEY, hex; undefined when no key is set. */
  apiKeyHash: string | undefined;
  tokens: TokenStore;
}

/** Whether a token's SHA-256 is the operator key's; comparing digests leaks neither length nor content. */
export function isOperatorDigest(tokenHash: string, apiKeyHash: string | undefined): boolean {
  return (
    apiKeyHash !== undefined && timingSafeEqual(Buffer.from(tokenHash, "hex"), Buffer.from(apiKeyHash, "hex"))
  );
}

/** Who is calling: the operator, an agent, or nobody. A credential that matches neither is a 401. */
export async function resolveCaller(
  token: string | undefined,
  { apiKeyHash, tokens }: AuthOptions,
): Promise<Caller> {
  if (token === undefined) return { kind: "anonymous" };
  // One hash per request serves both checks.
  const tokenHash = hashToken(token);
  if (isOperatorDigest(tokenHash, apiKeyHash)) return { kind: "operator" };
  const agentId = await tokens.agentFor(tokenHash);
  if (agentId !== undefined) return { kind: "agent", agentId };
  throw new SwarmError("UNAUTHORIZED", "the bearer token is not a known agent token or the operator key");
}

/** Route guards, as preHandlers. Without SWARM_API_KEY the operator's actions are open (loopback only). */
export function guards(apiKey: string | undefined) {
  const isOperator = (caller: Caller) =>
    caller.kind === "operator" || (apiKey === undefined && caller.kind === "anonymous");
  return {
    operator: async (request: FastifyRequest, _reply: FastifyReply) => {
      refuseInvalid(request.caller);
      if (isOperator(request.caller)) return;
      if (request.caller.kind === "anonymous")
        throw new SwarmError("UNAUTHORIZED", "this needs the operator key");
      throw new SwarmError("FORBIDDEN", "this is an operator action; an agent token cannot do it");
    },
    /** Any known caller may read; with no key set, anyone may. */
    reader: async (request: FastifyRequest, _reply: FastifyReply) => {
      refuseInvalid(request.caller);
      if (request.caller.kind === "anonymous" && apiKey !== undefined) {
        throw new SwarmError("UNAUTHORIZED", "reading needs the operator key or an agent token");
      }
    },
    /** Any agent, with its own token. */
    agent: async (request: FastifyRequest, _reply: FastifyReply) => {
      agentOf(request);
    },
    /** The agent named by the `:id` in the path, with its own token. */
    self: async (request: FastifyRequest, _reply: FastifyReply) => {
      if (agentOf(request) !== (request.params as { id?: string }).id) {
        throw new SwarmError("FORBIDDEN", "an agent may act only for itself");
      }
    },
    /** The agent named by `:id`, or the operator. */
    selfOrOperator: async (request: FastifyRequest, _reply: FastifyReply) => {
      refuseInvalid(request.caller);
      if (isOperator(request.caller)) return;
      const params = request.params as { id?: string };
      if (request.caller.kind === "agent" && params.id === request.caller.agentId) return;
      if (request.caller.kind === "anonymous")
        throw new SwarmError("UNAUTHORIZED", "this needs the agent's token or the operator key");
      throw new SwarmError("FORBIDDEN", "an agent may act only for itself");
    },
  };
}

function refuseInvalid(caller: Caller): void {
  if (caller.kind === "invalid") throw caller.problem;
}

/** The calling agent's id; a 401 for anyone else. */
export function agentOf(request: FastifyRequest): string {
  refuseInvalid(request.caller);
  if (request.caller.kind !== "agent") throw new SwarmError("UNAUTHORIZED", "this needs an agent token");
  return request.caller.agentId;
}
