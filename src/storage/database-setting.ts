/**
 * What SWARM_DB (or a `url`/`path` option) names: an SQLite file, or a PostgreSQL database by
 * URL. Any other URL is refused by name, never taken for a file path (which would quietly make a
 * folder called `mysql:`).
 */
import { SwarmError } from "../errors.js";

export type DatabaseSetting = { engine: "sqlite"; path: string } | { engine: "postgres"; url: string };

const URL_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

export function parseDatabaseSetting(value: string, name = "SWARM_DB"): DatabaseSetting {
  const scheme = URL_SCHEME.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) return { engine: "sqlite", path: value };
  if (scheme === "postgres" || scheme === "postgresql") return { engine: "postgres", url: value };
  // The URL is not repeated: it may hold a password.
  throw new SwarmError(
    "INVALID_CONFIG",
    `${name} is a ${scheme}:// URL; give an SQLite file's path (or :memory:) or a postgres:// URL`,
    { field: name },
  );
}

/** The setting as it may be shown in logs and start lines: a URL without its password. */
export function describeDatabase(setting: DatabaseSetting): string {
  if (setting.engine === "sqlite") return setting.path;
  try {
    const url = new URL(setting.url);
    url.password = "";
    return url.toString();
  } catch {
    return "a PostgreSQL database";
  }
}
