import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach } from "vitest";

const made: string[] = [];

afterEach(() => {
  // Retried: a log's worker thread may still be closing a file of its own in the folder.
  for (const dir of made.splice(0))
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
});

/** A fresh folder under the OS temp dir, removed after the current test. */
export function tempDir(prefix = "swarm-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export function tempDbPath(name = "swarm.db"): string {
  return join(tempDir(), name);
}
