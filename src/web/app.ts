/**
 * buildApp(): the whole HTTP application as a Fastify instance, built from its parts. Tests
 * call it with `inject`; `server.ts` only reads configuration and listens.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { EventLog } from "../event-log/event-log.js";
import type { Logger } from "../logger.js";

export interface AppOptions {
  eventLog: EventLog;
  logger: Logger;
}

declare module "fastify" {
  interface FastifyInstance {
    eventLog: EventLog;
  }
}

export function buildApp({ eventLog, logger }: AppOptions): FastifyInstance {
  const loggerInstance: FastifyBaseLogger = logger;
  const app = Fastify({ loggerInstance });
  app.decorate("eventLog", eventLog);

  app.get("/healthz", async (_request, reply) => {
    try {
      eventLog.latestSeq();
      return { status: "ok", latest_seq: eventLog.latestSeq() };
    } catch (error) {
      app.log.error({ err: error }, "health check: the database did not answer");
      return reply.code(503).send({ status: "unavailable" });
    }
  });

  return app;
}
