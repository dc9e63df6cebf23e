/**
 * What the server logs of each request. Fastify's default is two lines at info ("incoming
 * request", "request completed"), which made `npm start` print two JSON lines per request and
 * little else. Here a request is one line at debug once it is answered, saying what was asked
 * and how it went (`GET /api/events?limit=1 200 (3 ms)`); its arrival is a line at trace, for
 * a request that is never answered, and at debug for a websocket, which is never "answered".
 * Failures keep Fastify's levels.
 */
import { LogController, type FastifyReply, type FastifyRequest } from "fastify";
import { redactQueryCredentials } from "../logger.js";
import { isWebsocketUpgrade } from "./same-origin.js";

export class RequestLogController extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    if (this.isLogDisabled(request)) return;
    const what = `${request.method} ${redactQueryCredentials(request.url)}`;
    // A websocket is handed over, never "completed": its one line is at its arrival.
    if (isWebsocketUpgrade(request)) request.log.debug({ req: request }, `${what} (websocket)`);
    else request.log.trace({ req: request }, `incoming request: ${what}`);
  }

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    if (error !== null && error !== undefined) return super.requestCompleted(error, request, reply);
    // pino's loggers say whether a level is on (Fastify's type does not promise it): a request
    // line is skipped before its message, with the URL masked, is built.
    const logger = reply.log as typeof reply.log & { isLevelEnabled?: (level: string) => boolean };
    if (this.isLogDisabled(request) || logger.isLevelEnabled?.("debug") === false) return;
    const responseTime = reply.elapsedTime;
    // The message quotes the URL, so it is masked here: pino's redaction covers fields only.
    reply.log.debug(
      { req: request, res: reply, responseTime },
      `${request.method} ${redactQueryCredentials(request.url)} ${reply.statusCode} (${Math.round(responseTime)} ms)`,
    );
  }

  override routeNotFound(request: FastifyRequest): void {
    if (this.isLogDisabled(request)) return;
    request.log.debug({ req: request }, "route not found");
  }
}
