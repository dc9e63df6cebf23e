import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "typebox";
import { SwarmError } from "../../errors.js";
import { EventType } from "../../event-log/event-types.js";
import { hashToken, newAgentToken } from "../auth.js";
import {
  AgentListQuery,
  AgentSchema,
  errorResponses,
  IdParams,
  NoQuery,
  RegisterAgentBody,
} from "../schemas.js";
import { agentView } from "../views.js";

export const agentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { coordinator, guard, eventLog, serverStore } = app;

  app.post(
    "/api/agents",
    {
      preHandler: guard.operator,
      schema: {
        tags: ["agents"],
        summary: "Register an agent; its token is shown once",
        body: RegisterAgentBody,
        response: {
          201: Type.Object({ agent: AgentSchema, token: Type.String() }),
          ...errorResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const token = newAgentToken();
      const result = await coordinator.submit({ type: "RegisterAgent", ...request.body }, ({ agent }) =>
        agent === undefined
          ? []
          : [
              {
                kind: "save_token",
                token_hash: hashToken(token),
                agent_id: agent.id,
                created_at: agent.registered_at,
              },
            ],
      );
      return reply.code(201).send({ agent: await agentView(coordinator, result.agent!), token });
    },
  );

  app.get(
    "/api/agents",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["agents"],
        summary: "Agents in the order they registered, a page at a time",
        description:
          "Those that left are listed too (with `left_at`). Pass `next_cursor` back as `cursor` for the next page; it is null on the last. Agents registered meanwhile come at the end, so a walk sees every agent once.",
        querystring: AgentListQuery,
        response: {
          200: Type.Object({
            agents: Type.Array(AgentSchema),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errorResponses(400, 401),
        },
      },
    },
    async (request) => {
      const { status, limit, cursor } = request.query;
      const page = await coordinator.store.listAgents({
        status,
        limit: limit ?? 50,
        after: cursor === undefined ? undefined : Number(cursor),
      });
      const nowMs = (await coordinator.now()).getTime(); // once for the page
      return {
        agents: await Promise.all(page.agents.map((agent) => agentView(coordinator, agent, nowMs))),
        next_cursor: page.next_cursor,
      };
    },
  );

  app.get(
    "/api/agents/:id",
    {
      preHandler: guard.reader,
      schema: {
        tags: ["agents"],
        params: IdParams,
        querystring: NoQuery,
        response: { 200: Type.Object({ agent: AgentSchema }), ...errorResponses(400, 401, 404) },
      },
    },
    async (request) => {
      const agent = await coordinator.getAgent(request.params.id);
      if (agent === undefined) throw new SwarmError("AGENT_NOT_FOUND", `no agent ${request.params.id}`);
      return { agent: await agentView(coordinator, agent) };
    },
  );

  app.post(
    "/api/agents/:id/heartbeat",
    {
      preHandler: guard.self,
      schema: {
        tags: ["agents"],
        summary: "The agent is alive (its own token)",
        params: IdParams,
        response: { 200: Type.Object({ agent: AgentSchema }), ...errorResponses(401, 403, 409) },
      },
    },
    async (request) => {
      const result = await coordinator.submit({ type: "Heartbeat", agent_id: request.params.id });
      return { agent: await agentView(coordinator, result.agent!) };
    },
  );

  app.delete(
    "/api/agents/:id",
    {
      preHandler: guard.selfOrOperator,
      schema: {
        tags: ["agents"],
        summary: "Deregister (the agent itself or the operator); its open tasks are put up again",
        params: IdParams,
        response: { 200: Type.Object({ agent: AgentSchema }), ...errorResponses(401, 403, 404, 409) },
      },
    },
    async (request) => {
      // Its tokens go in the same transaction: once it has left, they are refused at once, and
      // its open streams are closed (app.ts, on agent.left).
      const result = await coordinator.submit(
        { type: "DeregisterAgent", agent_id: request.params.id },
        ({ agent }) => (agent === undefined ? [] : [{ kind: "revoke_tokens", agent_id: agent.id }]),
      );
      return { agent: await agentView(coordinator, result.agent!) };
    },
  );

  app.post(
    "/api/agents/:id/token",
    {
      preHandler: guard.selfOrOperator,
      schema: {
        tags: ["agents"],
        summary:
          "Rotate the agent's token (the agent itself or the operator): a new one is shown once, the old one is refused at once and its streams closed",
        params: IdParams,
        response: {
          200: Type.Object({ agent: AgentSchema, token: Type.String() }),
          ...errorResponses(401, 403, 404, 409),
        },
      },
    },
    async (request) => {
      const agent = await coordinator.getAgent(request.params.id);
      if (agent === undefined) throw new SwarmError("AGENT_NOT_FOUND", `no agent ${request.params.id}`);
      if (agent.left_at !== null)
        throw new SwarmError("AGENT_LEFT", `agent ${agent.id} has deregistered; register a new one`);
      const token = newAgentToken();
      const now = eventLog.clock().toISOString();
      await serverStore.rotateToken(agent.id, hashToken(token), {
        event_type: EventType.AGENT_TOKEN_ROTATED,
        source: request.caller.kind === "agent" ? agent.id : "operator",
        agent_id: agent.id,
        data: { by: request.caller.kind === "agent" ? "agent" : "operator" },
        timestamp: now,
      });
      return { agent: await agentView(coordinator, agent), token };
    },
  );
};
