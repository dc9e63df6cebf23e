/**
 * The web server's own tables on PostgreSQL (tokens, Idempotency-Keys, dashboard sessions,
 * server secrets) and the extra rows it writes inside a command's transaction. Every read goes
 * to the database: nothing is remembered that another replica could change.
 */
import { randomBytes } from "node:crypto";
import type pg from "pg";
import type { EventInput, StoredEvent } from "../../event-log/types.js";
import { prepareEvent } from "../../event-log/validate.js";
import type { Schedule } from "../../coordinator/schedules.js";
import { isSwarmError } from "../../errors.js";
import {
  firedElsewhere,
  SCHEDULE_COLUMNS,
  scheduleNotFound,
  toSchedule,
  type ExtraWrite,
  type IdempotencyRecord,
  type ScheduleRow,
  type ScheduleWrite,
  type ServerStorePort,
} from "../port.js";
import { inTransaction } from "./database.js";
import { appendPrepared, type PostgresEventLog } from "./event-log.js";

/** Write the extra rows of a command; call inside its transaction. */
export async function writeExtra(client: pg.ClientBase, write: ExtraWrite): Promise<void> {
  switch (write.kind) {
    case "save_token":
      await client.query("INSERT INTO agent_tokens (token_hash, agent_id, created_at) VALUES ($1, $2, $3)", [
        write.token_hash,
        write.agent_id,
        write.created_at,
      ]);
      return;
    case "revoke_tokens":
      await client.query("DELETE FROM agent_tokens WHERE agent_id = $1", [write.agent_id]);
      return;
    case "idempotency_key":
      await client.query(
        "INSERT INTO idempotency_keys (key, task_id, created_at, request_digest) VALUES ($1, $2, $3, $4)",
        [write.key, write.task_id, write.created_at, write.request_digest],
      );
      return;
    case "schedule_fired": {
      // Two replicas firing at once: the second waits on the first's row lock, then finds
      // next_fire_at moved on (READ COMMITTED re-checks the row) and changes nothing.
      const { rowCount } = await client.query(
        "UPDATE schedules SET next_fire_at = $1, last_fired_at = $2, fired = fired + 1 WHERE id = $3 AND next_fire_at = $4",
        [write.next_fire_at, write.fired_at, write.schedule_id, write.expected_next_fire_at],
      );
      if (rowCount === 0) throw firedElsewhere(write.schedule_id);
      return;
    }
  }
}

export class PostgresServerStore implements ServerStorePort {
  constructor(private readonly eventLog: PostgresEventLog) {}

  private async first<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<R | undefined> {
    return this.eventLog.readWith(async (pool) => (await pool.query<R>(sql, params)).rows[0]);
  }

  async agentForToken(tokenHash: string): Promise<string | undefined> {
    const row = await this.first<{ agent_id: string }>(
      "SELECT agent_id FROM agent_tokens WHERE token_hash = $1",
      [tokenHash],
    );
    return row?.agent_id;
  }

  async rotateToken(
    agentId: string,
    tokenHash: string,
    event: EventInput & { timestamp: string },
  ): Promise<StoredEvent> {
    return this.writeWithEvent(event, async (client) => {
      await writeExtra(client, { kind: "revoke_tokens", agent_id: agentId });
      await writeExtra(client, {
        kind: "save_token",
        token_hash: tokenHash,
        agent_id: agentId,
        created_at: event.timestamp,
      });
    });
  }

  /**
   * `write`'s rows and `event` in one transaction, the event announced once committed. A refusal
   * of the caller's own (a SwarmError) passes through; a failed write is noted as the storage's.
   */
  private async writeWithEvent(
    event: EventInput & { timestamp: string },
    write: (client: pg.PoolClient) => Promise<void>,
  ): Promise<StoredEvent> {
    const prepared = prepareEvent(event, new Date(event.timestamp));
    let stored: StoredEvent[] = [];
    try {
      await this.eventLog.whenReady();
      stored = await inTransaction(this.eventLog.pool, async (client) => {
        await write(client);
        return appendPrepared(client, [prepared]);
      });
    } catch (error) {
      if (isSwarmError(error)) throw error;
      throw this.eventLog.noteFailure(error);
    }
    await this.eventLog.committed(stored);
    return stored[0] as StoredEvent;
  }

  idempotencyKey(key: string): Promise<IdempotencyRecord | undefined> {
    return this.first<IdempotencyRecord>(
      "SELECT task_id, request_digest FROM idempotency_keys WHERE key = $1",
      [key],
    );
  }

  async toolReportId(
    taskId: string,
    agentId: string,
    eventType: string,
    callId: string,
  ): Promise<string | undefined> {
    // data is the stored JSON text; the task index narrows it to one task's events first.
    const row = await this.first<{ id: string }>(
      `SELECT id FROM event_log WHERE task_id = $1 AND agent_id = $2 AND event_type = $3
       AND (data::jsonb) ->> 'call_id' = $4 LIMIT 1`,
      [taskId, agentId, eventType, callId],
    );
    return row?.id;
  }

  async saveSession(idHash: string, createdAt: string, expiresAt: string, now: string): Promise<void> {
    await this.eventLog.readWith(async (pool) => {
      await pool.query("DELETE FROM dashboard_sessions WHERE expires_at <= $1", [now]);
      await pool.query(
        "INSERT INTO dashboard_sessions (id_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        [idHash, createdAt, expiresAt],
      );
    });
  }

  async liveSession(idHash: string, now: string): Promise<string | undefined> {
    const row = await this.first<{ expires_at: string }>(
      "SELECT expires_at FROM dashboard_sessions WHERE id_hash = $1 AND expires_at > $2",
      [idHash, now],
    );
    return row?.expires_at;
  }

  async removeSession(idHash: string): Promise<void> {
    await this.eventLog.readWith((pool) =>
      pool.query("DELETE FROM dashboard_sessions WHERE id_hash = $1", [idHash]),
    );
  }

  async serverSecret(name: string, now: Date): Promise<string> {
    // Two replicas starting together both insert; the first wins and both read its value.
    const row = await this.eventLog.readWith(async (pool) => {
      await pool.query(
        "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        [name, randomBytes(32).toString("base64url"), now.toISOString()],
      );
      return (await pool.query<{ value: string }>("SELECT value FROM server_secrets WHERE name = $1", [name]))
        .rows[0];
    });
    if (row === undefined) throw new Error(`server secret ${name} was not stored`);
    return row.value;
  }

  writeSchedule(write: ScheduleWrite, event: EventInput & { timestamp: string }): Promise<StoredEvent> {
    return this.writeWithEvent(event, async (client) => {
      if (write.kind === "create") {
        const { schedule } = write;
        await client.query(
          `INSERT INTO schedules (${SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
          [
            schedule.id,
            schedule.cron,
            schedule.timezone,
            JSON.stringify(schedule.task),
            schedule.paused,
            schedule.next_fire_at,
            schedule.last_fired_at,
            schedule.fired,
            schedule.created_at,
          ],
        );
        return;
      }
      const { rowCount } =
        write.kind === "delete"
          ? await client.query("DELETE FROM schedules WHERE id = $1", [write.schedule_id])
          : await client.query("UPDATE schedules SET paused = $1, next_fire_at = $2 WHERE id = $3", [
              write.paused,
              write.next_fire_at,
              write.schedule_id,
            ]);
      if (rowCount === 0) throw scheduleNotFound(write.schedule_id);
    });
  }

  async getSchedule(id: string): Promise<Schedule | undefined> {
    const row = await this.first<ScheduleRow>(`SELECT ${SCHEDULE_COLUMNS} FROM schedules WHERE id = $1`, [
      id,
    ]);
    return row === undefined ? undefined : toSchedule(row);
  }

  async listSchedules(): Promise<Schedule[]> {
    const rows = await this.eventLog.readWith(
      async (pool) =>
        (await pool.query<ScheduleRow>(`SELECT ${SCHEDULE_COLUMNS} FROM schedules ORDER BY pos`)).rows,
    );
    return rows.map(toSchedule);
  }

  async dueSchedules(now: string, limit: number): Promise<Schedule[]> {
    const rows = await this.eventLog.readWith(
      async (pool) =>
        (
          await pool.query<ScheduleRow>(
            `SELECT ${SCHEDULE_COLUMNS} FROM schedules WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2`,
            [now, limit],
          )
        ).rows,
    );
    return rows.map(toSchedule);
  }
}
