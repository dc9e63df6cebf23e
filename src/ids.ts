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
