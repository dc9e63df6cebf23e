/**
 * The web server's own tables on SQLite (tokens, Idempotency-Keys, dashboard sessions, server
 * secrets) and the extra rows it writes inside a command's transaction.
 */
import { randomBytes } from "node:crypto";
import type { EventInput, StoredEvent } from "../../event-log/types.js";
import type { Schedule } from "../../coordinator/schedules.js";
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
import type { SqliteDatabase } from "./database.js";
import type { SqliteEventLog } from "./event-log.js";

const SQL = {
  saveToken: "INSERT INTO agent_tokens (token_hash, agent_id, created_at) VALUES (?, ?, ?)",
  revokeTokens: "DELETE FROM agent_tokens WHERE agent_id = ?",
  saveKey: "INSERT INTO idempotency_keys (key, task_id, created_at, request_digest) VALUES (?, ?, ?, ?)",
  fireSchedule:
    "UPDATE schedules SET next_fire_at = ?, last_fired_at = ?, fired = fired + 1 WHERE id = ? AND next_fire_at = ?",
  insertSchedule: `INSERT INTO schedules (${SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  pauseSchedule: "UPDATE schedules SET paused = ?, next_fire_at = ? WHERE id = ?",
  deleteSchedule: "DELETE FROM schedules WHERE id = ?",
  scheduleById: `SELECT ${SCHEDULE_COLUMNS} FROM schedules WHERE id = ?`,
  allSchedules: `SELECT ${SCHEDULE_COLUMNS} FROM schedules ORDER BY rowid`,
  dueSchedules: `SELECT ${SCHEDULE_COLUMNS} FROM schedules WHERE next_fire_at <= ? ORDER BY next_fire_at LIMIT ?`,
};

/** Write the extra rows of a command; call inside its transaction. */
export function writeExtra(db: SqliteDatabase, write: ExtraWrite): void {
  switch (write.kind) {
    case "save_token":
      db.prepare(SQL.saveToken).run(write.token_hash, write.agent_id, write.created_at);
      return;
    case "revoke_tokens":
      db.prepare(SQL.revokeTokens).run(write.agent_id);
      return;
    case "idempotency_key":
      db.prepare(SQL.saveKey).run(write.key, write.task_id, write.created_at, write.request_digest);
      return;
    case "schedule_fired": {
      const { changes } = db
        .prepare(SQL.fireSchedule)
        .run(write.next_fire_at, write.fired_at, write.schedule_id, write.expected_next_fire_at);
      if (changes === 0) throw firedElsewhere(write.schedule_id);
      return;
    }
  }
}

export class SqliteServerStore implements ServerStorePort {
  private readonly db: SqliteDatabase;
  private readonly statements;

  constructor(private readonly eventLog: SqliteEventLog) {
    const db = (this.db = eventLog.db);
    this.statements = {
      // Prepared once: the scheduler asks for due schedules four times a second.
      dueSchedules: db.prepare<[string, number], ScheduleRow>(SQL.dueSchedules),
      scheduleById: db.prepare<[string], ScheduleRow>(SQL.scheduleById),
      allSchedules: db.prepare<[], ScheduleRow>(SQL.allSchedules),
      tokenAgent: db
        .prepare<[string], string>("SELECT agent_id FROM agent_tokens WHERE token_hash = ?")
        .pluck(),
      key: db.prepare<[string], IdempotencyRecord>(
        "SELECT task_id, request_digest FROM idempotency_keys WHERE key = ?",
      ),
      toolReport: db
        .prepare<[string, string, string, string], string>(
          `SELECT id FROM event_log WHERE task_id = ? AND agent_id = ? AND event_type = ?
           AND json_extract(data, '$.call_id') = ? LIMIT 1`,
        )
        .pluck(),
      insertSession: db.prepare<[string, string, string]>(
        "INSERT INTO dashboard_sessions (id_hash, created_at, expires_at) VALUES (?, ?, ?)",
      ),
      liveSession: db
        .prepare<[string, string], string>(
          "SELECT expires_at FROM dashboard_sessions WHERE id_hash = ? AND expires_at > ?",
        )
        .pluck(),
      removeSession: db.prepare<[string]>("DELETE FROM dashboard_sessions WHERE id_hash = ?"),
      removeExpired: db.prepare<[string]>("DELETE FROM dashboard_sessions WHERE expires_at <= ?"),
      makeSecret: db.prepare<[string, string, string]>(
        "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
      ),
      secret: db.prepare<[string], string>("SELECT value FROM server_secrets WHERE name = ?").pluck(),
    };
  }

  agentForToken(tokenHash: string): string | undefined {
    return this.statements.tokenAgent.get(tokenHash);
  }

  async rotateToken(
    agentId: string,
    tokenHash: string,
    event: EventInput & { timestamp: string },
  ): Promise<StoredEvent> {
    return this.eventLog.transaction((tx) => {
      writeExtra(this.db, { kind: "revoke_tokens", agent_id: agentId });
      writeExtra(this.db, {
        kind: "save_token",
        token_hash: tokenHash,
        agent_id: agentId,
        created_at: event.timestamp,
      });
      return tx.append(event);
    });
  }

  idempotencyKey(key: string): IdempotencyRecord | undefined {
    return this.statements.key.get(key);
  }

  toolReportId(taskId: string, agentId: string, eventType: string, callId: string): string | undefined {
    return this.statements.toolReport.get(taskId, agentId, eventType, callId);
  }

  saveSession(idHash: string, createdAt: string, expiresAt: string, now: string): void {
    this.statements.removeExpired.run(now);
    this.statements.insertSession.run(idHash, createdAt, expiresAt);
  }

  liveSession(idHash: string, now: string): string | undefined {
    return this.statements.liveSession.get(idHash, now);
  }

  removeSession(idHash: string): void {
    this.statements.removeSession.run(idHash);
  }

  serverSecret(name: string, now: Date): string {
    this.statements.makeSecret.run(name, randomBytes(32).toString("base64url"), now.toISOString());
    return this.statements.secret.get(name)!;
  }

  writeSchedule(write: ScheduleWrite, event: EventInput & { timestamp: string }): Promise<StoredEvent> {
    return Promise.resolve(
      this.eventLog.transaction((tx) => {
        if (write.kind === "create") {
          const row = scheduleRow(write.schedule);
          this.db
            .prepare(SQL.insertSchedule)
            .run(
              row.id,
              row.cron,
              row.timezone,
              row.task,
              row.paused,
              row.next_fire_at,
              row.last_fired_at,
              row.fired,
              row.created_at,
            );
        } else {
          const { changes } =
            write.kind === "delete"
              ? this.db.prepare(SQL.deleteSchedule).run(write.schedule_id)
              : this.db
                  .prepare(SQL.pauseSchedule)
                  .run(write.paused ? 1 : 0, write.next_fire_at, write.schedule_id);
          if (changes === 0) throw scheduleNotFound(write.schedule_id);
        }
        return tx.append(event);
      }),
    );
  }

  getSchedule(id: string): Schedule | undefined {
    const row = this.statements.scheduleById.get(id);
    return row === undefined ? undefined : toSchedule(row);
  }

  listSchedules(): Schedule[] {
    return this.statements.allSchedules.all().map(toSchedule);
  }

  dueSchedules(now: string, limit: number): Schedule[] {
    return this.statements.dueSchedules.all(now, limit).map(toSchedule);
  }
}

function scheduleRow(schedule: Schedule): ScheduleRow & { paused: number } {
  return { ...schedule, task: JSON.stringify(schedule.task), paused: schedule.paused ? 1 : 0 };
}
