/** The web server's own store on the engine that holds the event log. */
import type { EventLogPort, ServerStorePort } from "./port.js";
import { PostgresEventLog } from "./postgres/event-log.js";
import { PostgresServerStore } from "./postgres/server-store.js";
import { SqliteEventLog } from "./sqlite/event-log.js";
import { SqliteServerStore } from "./sqlite/server-store.js";

export function serverStoreFor(eventLog: EventLogPort): ServerStorePort {
  if (eventLog instanceof SqliteEventLog) return new SqliteServerStore(eventLog);
  if (eventLog instanceof PostgresEventLog) return new PostgresServerStore(eventLog);
  throw new Error(`no server store for the ${eventLog.engine} engine's log`);
}
