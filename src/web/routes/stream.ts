/**
 * The live stream: every stored event after `after_seq` that matches the filter, then the live
 * ones, each exactly once and in seq order across the switch from backfill to live. A client
 * that reconnects with the last seq it saw misses nothing and sees nothing twice.
 */
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { FastifyRequest } from "fastify";
import type { StoredEvent } from "../../event-log/types.js";
import { normalizeFilter } from "../../event-log/validate.js";
import { closeReason } from "../errors.js";
import { StreamQuery } from "../schemas.js";
import { splitTypes } from "./events.js";

export interface StreamOptions {
  /** How often to ping; a client that has not answered the previous ping is dropped. */
  pingIntervalMs: number;
  /**
   * Bytes of live events waiting in the server for a client (what the kernel has not taken)
   * beyond which the client counts as too slow and is closed.
   */
  maxBufferedBytes: number;
  /**
   * Bytes of backfill the server holds for a client at most: past this it waits until the
   * client has taken them before it sends (or reads from the log) any more.
   */
  backfillBufferBytes: number;
}

export const STREAM_DEFAULTS: StreamOptions = {
  pingIntervalMs: 30_000,
  // Beyond the kernel's own buffers, which a client that reads at all keeps draining: a
  // megabyte more is seconds behind for an agent on a slow link, and a bound on what a
  // stuck one costs.
  maxBufferedBytes: 1024 * 1024,
  // The kernel's buffers (megabytes on a fast link) do the real buffering; this only keeps
  // them topped up from one turn of the event loop to the next.
  backfillBufferBytes: 64 * 1024,
};

/** Close codes a client acts on (4000-4999 are the application's own). */
export const STREAM_CLOSE = {
  SLOW_CONSUMER: 4001,
  /** The filter cannot be used (an event type that is not one); the reason says why. */
  BAD_FILTER: 4400,
  SHUTTING_DOWN: 1001,
} as const;

/** Events per backfill read, sent while the socket has room; the rest are let go and read again. */
const BACKFILL_PAGE = 100;
/** Live events kept aside while a backfill reads; past it, the backfill reads once more instead. */
const MAX_HEARD_DURING_BACKFILL = 10_000;
/**
 * A tick's corked frames are handed to the kernel once they reach this size, so that the
 * socket's unsent bytes measure what the client has not taken, not the size of a commit.
 */
const CORK_FLUSH_BYTES = 64 * 1024;

/**
 * Every subscriber is handed the same event object, so a message is serialized once however
 * many clients receive it. It is kept as bytes: a string handed to a socket is copied for
 * each client into storage sized for its worst-case UTF-8 (three bytes a character), which a
 * client that stops reading then holds, while a Buffer goes out as it is.
 */
const messages = new WeakMap<StoredEvent, Buffer>();
function messageOf(event: StoredEvent): Buffer {
  let message = messages.get(event);
  if (message === undefined) {
    message = Buffer.from(JSON.stringify({ type: "event", event }));
    messages.set(event, message);
  }
  return message;
}

export const streamRoutes: FastifyPluginAsyncTypebox<{ stream: StreamOptions }> = async (
  app,
  { stream: options },
) => {
  const { eventLog, guard, metrics, visibility, coordinator } = app;
  const startsAfter = new WeakMap<FastifyRequest, number>();
  // Agents' streams open on this process, by agent: what this process vouches for (StreamSeen).
  const agentStreams = new Map<string, number>();
  const vouch = (agentId: string, open: boolean) =>
    coordinator
      .submit(open ? { type: "StreamSeen", agent_id: agentId } : { type: "StreamClosed", agent_id: agentId })
      .catch((error: unknown) =>
        app.log.debug({ err: error, agent_id: agentId }, "stream presence not recorded"),
      );

  app.get(
    "/api/stream",
    {
      websocket: true,
      preHandler: [
        guard.reader,
        // "From now on" is the newest seq when the handshake is accepted, read before the
        // upgrade is answered: an event a client causes once its socket is open is after it.
        async (request) => {
          if (request.query.after_seq === undefined) startsAfter.set(request, await eventLog.latestSeq());
        },
      ],
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
      // What this caller may see: sealed bids of others are left out, their contents withheld.
      const reader = app.readerOf(request);
      // Set before anything is sent: after_seq, or (without it: from now on) the newest seq.
      let lastSent = query.after_seq ?? startsAfter.get(request) ?? 0;
      let backfilling = true;
      // Live events heard while the backfill reads, sent once it has caught up (see backfill).
      let heardMeanwhile: StoredEvent[] = [];
      let heardTooMany = false;
      let closed = false;
      let alive = true;
      metrics.openWebsockets.inc({ kind: "api" });
      // An agent's open stream says it is listening; renewed while open, so that a replica that
      // dies stops vouching for it within a lease.
      const agentId = request.caller.kind === "agent" ? request.caller.agentId : undefined;
      let renew: NodeJS.Timeout | undefined;
      if (agentId !== undefined) {
        agentStreams.set(agentId, (agentStreams.get(agentId) ?? 0) + 1);
        void vouch(agentId, true);
        renew = setInterval(
          () => void vouch(agentId, true),
          Math.max(1000, coordinator.rules.streamLeaseMs / 3),
        );
        renew.unref();
      }

      const closeSlow = () => {
        if (closed) return;
        socket.close(
          STREAM_CLOSE.SLOW_CONSUMER,
          `too slow; reconnect with after_seq=<last seq you received>`,
        );
        cleanUp();
      };
      // A commit announces its events in one go: hold this client's frames until the current
      // tick ends (or CORK_FLUSH_BYTES have gathered) and hand them to the kernel in one write
      // instead of one write per event.
      // (ws exposes no cork of its own; its TCP socket is the documented-by-use `_socket`.)
      const tcp = (socket as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
      let corked = false;
      // A socket that failed (a reset peer) is not open before its close event comes.
      const open = () => !closed && socket.readyState === socket.OPEN;
      /** `written` is called once the message has gone to the kernel, or the socket is gone. */
      const send = (event: StoredEvent, written?: () => void) => {
        if (!open() || event.seq <= lastSent) return written?.();
        const visible = visibility.event(event, reader);
        if (visible === null) {
          lastSent = event.seq;
          return written?.();
        }
        if (socket.bufferedAmount > options.maxBufferedBytes) {
          closeSlow();
          return written?.();
        }
        if (!corked && tcp !== undefined) {
          corked = true;
          tcp.cork();
          process.nextTick(() => {
            corked = false;
            tcp.uncork();
          });
        }
        socket.send(messageOf(visible), { binary: false }, written);
        lastSent = event.seq;
        if (corked && tcp !== undefined && socket.bufferedAmount >= CORK_FLUSH_BYTES) {
          tcp.uncork();
          tcp.cork();
        }
      };
      // Listening starts before the first read. While the backfill runs, live events are kept
      // aside (up to a bound): every event committed after a read's snapshot is heard after
      // this subscription, so the last read plus what was heard covers everything exactly once.
      const unsubscribe = eventLog.subscribe((event) => {
        if (!backfilling) send(event);
        else if (heardMeanwhile.length < MAX_HEARD_DURING_BACKFILL) heardMeanwhile.push(event);
        else heardTooMany = true;
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
        if (agentId !== undefined) {
          clearInterval(renew);
          const left = (agentStreams.get(agentId) ?? 1) - 1;
          if (left > 0) agentStreams.set(agentId, left);
          else {
            agentStreams.delete(agentId);
            void vouch(agentId, false);
          }
        }
        metrics.openWebsockets.dec({ kind: "api" });
      }
      socket.on("pong", () => (alive = true));
      socket.on("close", cleanUp);
      socket.on("error", cleanUp);
      // Clients have nothing to say; whatever they send is ignored, never parsed.
      socket.on("message", () => undefined);

      /**
       * Backfill paced by the socket: send the next page from the log while the socket has
       * room (backfillBufferBytes). `drained` settles once the last event sent has gone to the
       * kernel; the rest of the page is read again after it, so no page waits in memory for a
       * client that has stopped reading (which is why the wait is handed out rather than
       * awaited here: this function's frame would keep the page). Undefined: caught up.
       */
      const sendPage = async (): Promise<{ drained: Promise<void> } | undefined> => {
        if (!open()) return undefined;
        // Awaited only when the engine answers with a promise: on SQLite the read and the sends
        // run in one go, so many backfilling streams never hold their pages at the same time.
        const read = eventLog.listEvents({ ...filter, after_seq: lastSent, limit: BACKFILL_PAGE });
        const page = read instanceof Promise ? await read : read;
        const ready = visibility.ready(page.events);
        if (ready !== undefined) await ready;
        for (const [index, event] of page.events.entries()) {
          const full = socket.bufferedAmount >= options.backfillBufferBytes;
          // A page that is not the last one ends with a wait too: the next read waits for it.
          if (full || (index === page.events.length - 1 && page.next_cursor !== null)) {
            return { drained: new Promise<void>((resolve) => send(event, resolve)) };
          }
          send(event);
        }
        return undefined;
      };
      const backfill = async () => {
        const oldest = await eventLog.oldestSeq();
        if (query.after_seq !== undefined && oldest !== null && query.after_seq + 1 < oldest) {
          socket.send(JSON.stringify({ type: "resync", oldest_seq: oldest }));
        }
        for (;;) {
          const more = await sendPage();
          if (more !== undefined) {
            await more.drained;
            if (!open()) return;
            continue;
          }
          if (!open()) return;
          // Caught up. Too much was heard meanwhile to keep: read again from where it got to.
          if (heardTooMany) {
            heardTooMany = false;
            heardMeanwhile = [];
            continue;
          }
          // Live from here, in the same tick: what was heard and not yet sent goes first.
          backfilling = false;
          const heard = heardMeanwhile;
          heardMeanwhile = [];
          for (const event of heard) send(event);
          return;
        }
      };
      backfill().catch((error: unknown) => {
        request.log.error({ err: error }, "stream backfill failed");
        socket.close(1011, "backfill failed; reconnect");
        cleanUp();
      });
    },
  );
};
