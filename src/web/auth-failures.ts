/**
 * Wrong credentials are limited per client address, so that the operator key cannot be guessed
 * online: after `limit` failures within `windowMs`, that address is answered 429 for anything
 * that is not a known agent token — the operator key included, right or wrong, since answering
 * a right guess differently would let the guessing go on. Agent tokens (256 random bits, not
 * guessable) keep working, so agents on an address someone is guessing from are not locked out.
 */
import { SwarmError } from "../errors.js";

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
  fail(address: string): void {
    if (this.options.limit === false) return;
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
  check(address: string): void {
    if (this.options.limit === false) return;
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
