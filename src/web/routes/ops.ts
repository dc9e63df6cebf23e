import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "typebox";
import { countAgents } from "../../coordinator/state.js";
import { TASK_STATUSES } from "../../coordinator/types.js";
import type { EventLogPort } from "../../storage/port.js";
import { errorResponses } from "../schemas.js";

const StorageEngineSchema = Type.Union([Type.Literal("sqlite"), Type.Literal("postgres")], {
  description: "The storage engine serving: the embedded SQLite file, or PostgreSQL.",
});

const ReplicaSchema = Type.Object(
  {
    id: Type.String({ description: "This replica's name: SWARM_REPLICA_ID, or host-pid-suffix." }),
    leader: Type.Boolean({
      description: "Whether this replica holds the maintenance lease (retention and rollups run on it).",
    }),
    lease_holder: Type.Union([Type.String(), Type.Null()], {
      description: "The replica holding the lease as this one last saw it; null while nobody holds it.",
    }),
    peers: Type.Integer({ description: "Other replicas running on the same database, as last counted." }),
  },
  { description: "This process as one replica of the coordinator (on SQLite, always the only one)." },
);

export const opsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { metrics } = app;
  const { replica: status } = app.coordinator;
  const replica = () => ({
    id: status.id,
    leader: status.leader,
    lease_holder: status.leaseHolder,
    peers: status.peers,
  });
  // Through the port: the answer is the same on either engine.
  const eventLog: EventLogPort = app.eventLog;

  app.get(
    "/healthz",
    {
      config: { rateLimit: false },
      schema: {
        tags: ["operations"],
        response: {
          200: Type.Object({
            status: Type.Literal("ok"),
            storage: StorageEngineSchema,
            replica: ReplicaSchema,
            latest_seq: Type.Integer(),
            search_indexed_through: Type.Optional(
              Type.Integer({
                description:
                  "The newest seq the text-search index holds; searches scan the events after it. Absent without an index.",
              }),
            ),
          }),
          503: Type.Object({
            status: Type.Union([Type.Literal("unavailable"), Type.Literal("degraded")]),
            storage: StorageEngineSchema,
            replica: ReplicaSchema,
            storage_error: Type.Optional(
              Type.String({
                description: "Why writes fail, and since when: the next write that succeeds clears it.",
              }),
            ),
          }),
        },
      },
    },
    async (_request, reply) => {
      const storage = eventLog.engine;
      try {
        const latest_seq = await eventLog.latestSeq();
        // Reads still work, but the coordinator cannot record anything: say so, and why.
        const failure = eventLog.storageFailure;
        if (failure !== undefined) {
          return reply.code(503).send({
            status: "degraded" as const,
            storage,
            replica: replica(),
            storage_error: `writes failing since ${failure.since} (${failure.code}); the next write that succeeds clears this`,
          });
        }
        const search_indexed_through = eventLog.searchIndexedThrough();
        return {
          status: "ok" as const,
          storage,
          replica: replica(),
          latest_seq,
          ...(search_indexed_through === undefined ? {} : { search_indexed_through }),
        };
      } catch (error) {
        app.log.error({ err: error }, "health check: the database did not answer");
        return reply.code(503).send({ status: "unavailable" as const, storage, replica: replica() });
      }
    },
  );

  const count = (description: string) => Type.Integer({ minimum: 0, description });
  app.get(
    "/api/status",
    {
      preHandler: app.guard.reader,
      schema: {
        tags: ["operations"],
        summary: "The swarm at a glance, as JSON for scripts and monitors (the Python version's GET /swarm)",
        description:
          "Agents by status (`online` is idle plus busy; `left` have deregistered and are not counted " +
          "elsewhere), tasks by status, the open auctions, the newest seq, the storage engine and this replica. " +
          "Tasks are counted from counters kept as the swarm changes (the same cost at any size); agents from the " +
          "agent rows (in memory on SQLite, one read of the agents table on PostgreSQL).",
        response: {
          200: Type.Object({
            storage: StorageEngineSchema,
            replica: ReplicaSchema,
            latest_seq: Type.Integer(),
            agents: Type.Object({
              idle: count("Online, with room for more work"),
              busy: count("Online and at capacity"),
              offline: count("Silent past the heartbeat timeout, or since a restart"),
              online: count("idle + busy"),
              left: count("Deregistered"),
              total: count("Every agent known, those that left included"),
            }),
            tasks: Type.Object(
              Object.fromEntries(TASK_STATUSES.map((status) => [status, count(`Tasks ${status}`)])),
            ),
            open_auctions: count("Tasks in their auction now (tasks.bidding)"),
          }),
          ...errorResponses(401),
        },
      },
    },
    async () => {
      const agents = countAgents(await app.coordinator.listAgents());
      const tasks = await app.coordinator.store.taskCounts();
      return {
        storage: eventLog.engine,
        replica: replica(),
        latest_seq: await eventLog.latestSeq(),
        agents,
        tasks,
        open_auctions: tasks.bidding,
      };
    },
  );

  app.get(
    "/metrics",
    { config: { rateLimit: false }, schema: { tags: ["operations"], hide: true } },
    async (_request, reply) =>
      reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
};
