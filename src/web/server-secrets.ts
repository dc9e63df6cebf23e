/**
 * Secrets the server makes for itself: made once, stored in the database, so that they survive a
 * restart and every replica on one database uses the same one.
 */
import { randomBytes } from "node:crypto";
import type { SqliteDatabase } from "../storage/sqlite/database.js";

/** The secret called `name`, made now if it does not exist yet (32 random bytes, base64url). */
export function serverSecret(db: SqliteDatabase, name: string, now: Date = new Date()): string {
  db.prepare<[string, string, string]>(
    "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
  ).run(name, randomBytes(32).toString("base64url"), now.toISOString());
  return db.prepare<[string], string>("SELECT value FROM server_secrets WHERE name = ?").pluck().get(name)!;
}
