/**
 * A doorbell between replicas: after a commit of its own, a replica rings (a NOTIFY on a separate
 * connection, with only the ringer's name as payload), and every other replica, hearing it on its
 * LISTEN connection, reads the log on from its last seq at once instead of at its next poll.
 *
 * The events never travel in the notification: a NOTIFY inside the writing transaction would
 * take PostgreSQL's global notification lock at every commit (serialising commits under load),
 * and payloads are capped at 8000 bytes. Rings are sent after the commit, at most one in flight
 * per replica (rings asked for meanwhile become one more), so a busy replica rings at the rate
 * its database answers, not once per commit. The poll stays as the fallback: a lost ring, or a
 * listener reconnecting, costs latency, never an event.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import type { Logger } from "../../logger.js";
import { coalesced } from "./coalesced.js";

export const DOORBELL_CHANNEL = "swarm_event_log";

/** How long a listener that lost its connection waits before connecting again. */
const RECONNECT_MS = 1000;

export class Doorbell {
  /** Who rings: a listener ignores its own replica's rings (it has announced those events). */
  private readonly ringer = randomUUID();
  private listener: pg.Client | undefined;
  private stopped = false;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: {
      url: string;
      pool: pg.Pool;
      logger: Logger;
      /** Called when another replica has committed events. */
      onRing: () => void;
    },
  ) {}

  /** Start listening; a failure is logged and retried, never thrown (the poll still works). */
  start(): void {
    void this.listen();
  }

  private async listen(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({
      connectionString: this.options.url,
      keepAlive: true,
      application_name: "swarm-coordinator-doorbell",
    });
    this.listener = client;
    const retry = (error: unknown) => {
      if (this.stopped || this.listener !== client) return;
      this.options.logger.warn(
        { err: error },
        "the doorbell's connection failed; events arrive by the poll meanwhile",
      );
      this.listener = undefined;
      void client.end().catch(() => undefined);
      this.reconnectTimer = setTimeout(() => void this.listen(), RECONNECT_MS);
      this.reconnectTimer.unref();
    };
    client.on("error", retry);
    client.on("end", () => retry(new Error("connection ended")));
    client.on("notification", (message) => {
      if (message.payload !== this.ringer) this.options.onRing();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${DOORBELL_CHANNEL}`);
      // Anything committed while no listener was up is read now, not at the next poll.
      this.options.onRing();
    } catch (error) {
      retry(error);
    }
  }

  /**
   * Tell the other replicas there is something new: after a commit, never inside one; rings asked
   * for while one is on its way become one more.
   */
  readonly ring = coalesced(async () => {
    if (this.stopped) return;
    await this.options.pool.query("SELECT pg_notify($1, $2)", [DOORBELL_CHANNEL, this.ringer]).then(
      () => undefined,
      (error: unknown) => this.options.logger.debug({ err: error }, "ringing the doorbell failed"),
    );
  });

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    const client = this.listener;
    this.listener = undefined;
    await client?.end().catch(() => undefined);
  }
}
