/**
 * The live stream: every stored event after `after_seq` that matches the filter, then the live
 * ones, each exactly once and in seq order across the switch from backfill to live. A client
 * that reconnects with the last seq it saw misses nothing and sees nothing twice.
 */
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { StoredEvent } from "../../event-log/types.js";
import { normalizeFilter } from "../../event-log/validate.js";
import { closeReason } from "../errors.js";
import { StreamQuery } from "../schemas.js";
import { splitTypes } from "./events.js";

export interface StreamOptions {
  /** How often to ping; a client that has not answered the previous ping is dropped. */
  pingIntervalMs: number;
  /** Bytes waiting in a socket's send buffer beyond which the client counts as too slow. */
  maxBufferedBytes: number;
  /** Live events held while the backfill runs, beyond which the client counts as too slow. */
  maxPendingEvents: number;
}

export const STREAM_DEFAULTS: StreamOptions = {
  pingIntervalMs: 30_000,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxPendingEvents: 20_000,
};

/** Close codes a client acts on (4000-4999 are the application's own). */
export const STREAM_CLOSE = {
  SLOW_CONSUMER: 4001,
  /** The filter cannot be used (an event type that is not one); the reason says why. */
  BAD_FILTER: 4400,
  SHUTTING_DOWN: 1001,
} as const;

const BACKFILL_PAGE = 500;

/**
 * Every subscriber is handed the same event object, so a message is serialized once however
 * many clients receive it.
 */
const messages = new WeakMap<StoredEvent, string>();
function messageOf(event: StoredEvent): string {
  let message = messages.get(event);
  if (message === undefined) {
    message = JSON.stringify({ type: "event", event });
    messages.set(event, message);
  }
  return message;
}

export const streamRoutes: FastifyPluginAsyncTypebox<{ stream: StreamOptions }> = async (
  app,
  { stream: options },
) => {
  const { eventLog, guard, metrics } = app;

  app.get(
    "/api/stream",
    {
      websocket: true,
      preHandler: guard.reader,
      schema: {
        tags: ["events"],
        summary: "WebSocket: backfill after after_seq, then live events",
        querystring: StreamQuery,
      },
    },
    (socket, request) => {
      if (!app.admitSocket(socket, request)) return;
      const query = request.query;
      const types = splitTypes(query.type) ?? [];
      const filter = {
        ...(types.length > 0 ? { types } : {}),
        ...(query.task_id !== undefined ? { task_id: query.task_id } : {}),
        ...(query.agent_id !== undefined ? { agent_id: query.agent_id } : {}),
      };
      try {
        normalizeFilter(filter);
      } catch (error) {
        return socket.close(
          STREAM_CLOSE.BAD_FILTER,
          closeReason(error instanceof Error ? error.message : "bad filter"),
        );
      }
      // Without after_seq the client wants what happens from now on.
      let lastSent = query.after_seq ?? eventLog.latestSeq();
      let backfilling = true;
      let closed = false;
      let alive = true;
      const pending: StoredEvent[] = [];
      metrics.openWebsockets.inc({ kind: "api" });

      const closeSlow = () => {
        if (closed) return;
        socket.close(
          STREAM_CLOSE.SLOW_CONSUMER,
          `too slow; reconnect with after_seq=<last seq you received>`,
        );
        cleanUp();
      };
      // A commit announces its events in one go: hold this client's frames until the current
      // tick ends and hand them to the kernel in one write instead of one write per event.
      // (ws exposes no cork of its own; its TCP socket is the documented-by-use `_socket`.)
      const tcp = (socket as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
      let corked = false;
      const send = (event: StoredEvent) => {
        if (closed || event.seq <= lastSent) return;
        if (socket.bufferedAmount > options.maxBufferedBytes) return closeSlow();
        if (!corked && tcp !== undefined) {
          corked = true;
          tcp.cork();
          process.nextTick(() => {
            corked = false;
            tcp.uncork();
          });
        }
        socket.send(messageOf(event));
        lastSent = event.seq;
      };
      // Subscribe before the backfill reads anything, so no commit can fall between the two.
      const unsubscribe = eventLog.subscribe((event) => {
        if (!backfilling) return send(event);
        pending.push(event);
        if (pending.length > options.maxPendingEvents) closeSlow();
      }, filter);
      const ping = setInterval(() => {
        if (!alive) {
          socket.terminate();
          cleanUp();
          return;
        }
        alive = false;
        socket.ping();
      }, options.pingIntervalMs);
      ping.unref();
      function cleanUp() {
        if (closed) return;
        closed = true;
        unsubscribe();
        clearInterval(ping);
        metrics.openWebsockets.dec({ kind: "api" });
      }
      socket.on("pong", () => (alive = true));
      socket.on("close", cleanUp);
      socket.on("error", cleanUp);
      // Clients have nothing to say; whatever they send is ignored, never parsed.
      socket.on("message", () => undefined);

      const oldest = eventLog.oldestSeq();
      if (query.after_seq !== undefined && oldest !== null && query.after_seq + 1 < oldest) {
        socket.send(JSON.stringify({ type: "resync", oldest_seq: oldest }));
      }

      const backfill = async () => {
        for (;;) {
          const page = eventLog.listEvents({ ...filter, after_seq: lastSent, limit: BACKFILL_PAGE });
          for (const event of page.events) send(event);
          if (closed || page.next_cursor === null) break;
          // Let the socket drain before reading more: a reader that cannot keep up is let go.
          for (let waited = 0; socket.bufferedAmount > options.maxBufferedBytes / 2; waited += 10) {
            if (waited > 10_000 || closed) return closeSlow();
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
        }
        backfilling = false;
        for (const event of pending.splice(0)) send(event);
      };
      backfill().catch((error: unknown) => {
        request.log.error({ err: error }, "stream backfill failed");
        socket.close(1011, "backfill failed; reconnect");
        cleanUp();
      });
    },
  );
};
