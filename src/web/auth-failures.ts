/**
 * Wrong credentials are limited per client address, so that the operator key cannot be guessed
 * online: after `limit` failures within `windowMs`, that address is answered 429 for anything
 * that is not a known agent token — the operator key included, right or wrong, since answering
 * a right guess differently would let the guessing go on. Agent tokens (256 random bits, not
 * guessable) keep working, so agents on an address someone is guessing from are not locked out.
 */
import { SwarmError } from "../errors.js";

/**
 * The unit an address is counted in: an IPv4 address, or the /64 an IPv6 address belongs to
 * (one host commonly holds a whole /64, and would otherwise guess afresh from each address).
 */
export function addressKey(address: string): string {
  const bare = address.split("%")[0] ?? address; // a zone id (fe80::1%eth0) names no other host
  if (!bare.includes(":")) return bare;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(bare);
  if (mapped?.[1] !== undefined) return mapped[1];
  const [head = "", tail] = bare.split("::");
  const front = head === "" ? [] : head.split(":");
  const back = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups =
    tail === undefined
      ? front
      : [...front, ...Array<string>(8 - front.length - back.length).fill("0"), ...back];
  const prefix = groups.slice(0, 4).map((group) => group.toLowerCase().replace(/^0+(?=.)/, ""));
  return `${prefix.join(":")}::/64`;
}

export interface AuthFailureOptions {
  /** Failed authentications per address per window; false turns the limit off. */
  limit: number | false;
  windowMs: number;
  /** Addresses remembered at once; the oldest are forgotten first. */
  maxAddresses?: number;
}

interface Window {
  startedAt: number;
  failures: number;
}

export class AuthFailureLimiter {
  private readonly windows = new Map<string, Window>();
  private readonly maxAddresses: number;

  constructor(
    private readonly options: AuthFailureOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxAddresses = options.maxAddresses ?? 100_000;
  }

  /** Record a failed authentication from `address`. */
  fail(client: string): void {
    if (this.options.limit === false) return;
    const address = addressKey(client);
    const window = this.current(address) ?? { startedAt: this.now(), failures: 0 };
    window.failures += 1;
    // Re-inserted, so the map's order is oldest-touched first.
    this.windows.delete(address);
    this.windows.set(address, window);
    while (this.windows.size > this.maxAddresses) {
      const oldest = this.windows.keys().next().value;
      if (oldest === undefined) break;
      this.windows.delete(oldest);
    }
  }

  /** Throws RATE_LIMITED while `address` has used up its failures. */
  check(client: string): void {
    if (this.options.limit === false) return;
    const address = addressKey(client);
    const window = this.current(address);
    if (window === undefined || window.failures < this.options.limit) return;
    const retryAfter = Math.ceil((window.startedAt + this.options.windowMs - this.now()) / 1000);
    throw new SwarmError(
      "RATE_LIMITED",
      `too many failed authentications from ${address} (limit ${this.options.limit} per ${
        this.options.windowMs / 60_000
      } minutes); retry in ${retryAfter} s`,
      { retry_after: retryAfter, limit: "auth_failures" },
    );
  }

  private current(address: string): Window | undefined {
    const window = this.windows.get(address);
    if (window === undefined) return undefined;
    if (this.now() - window.startedAt >= this.options.windowMs) {
      this.windows.delete(address);
      return undefined;
    }
    return window;
  }
}
