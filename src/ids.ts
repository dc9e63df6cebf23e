/**
 * Time-ordered ids (UUIDv7): they sort by creation time, so each new row lands at the end of
 * an index instead of on a random page of it. uuid draws 16 fresh random bytes from the OS
 * for every id; a pooled buffer refilled 256 ids at a time makes that cost vanish (the same
 * trick Node's own randomUUID uses).
 */
import { randomFillSync } from "node:crypto";
import { v7 } from "uuid";

const IDS_PER_REFILL = 256;
const pool = new Uint8Array(16 * IDS_PER_REFILL);
let offset = pool.length;

function pooledRandom(): Uint8Array {
  if (offset >= pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const bytes = pool.subarray(offset, offset + 16);
  offset += 16;
  return bytes;
}

export function newId(): string {
  return v7({ rng: pooledRandom });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Ids up to this long are shown whole. */
const SHORT_ENOUGH = 12;

/**
 * The one short form of an id, wherever one is shown (dashboard, swarm-agent's lines), for when
 * no name or description says better. A UUIDv7 begins with its millisecond, so a burst of ids
 * shares its first digits: 100 tasks posted together once showed 4 distinct prefixes. Its last 8
 * hex digits are random (32 bits: two of 100 ids agree about once in a million), so those are
 * shown, after an ellipsis that says it is the end of the id. Other ids are shown whole up to 12
 * characters, else by their head and tail, where counters and names tend to differ.
 */
export function shortId(id: string | null | undefined): string {
  if (id === null || id === undefined) return "";
  if (UUID.test(id)) return `…${id.slice(-8).toLowerCase()}`;
  if (id.length <= SHORT_ENOUGH) return id;
  return `${id.slice(0, 5)}…${id.slice(-6)}`;
}
