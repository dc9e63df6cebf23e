/**
 * Bidding strategies: given an open task, how many sats to ask, or null to stay out. The
 * coordinator only lets an agent bid on tasks whose required capabilities it has; a strategy
 * decides how keen it is.
 */
import type { TaskView } from "./client.js";

export interface BidContext {
  capabilities: readonly string[];
  /** Tasks this agent is running now, and how many it may run at once. */
  running: number;
  maxConcurrent: number;
}

export type BidStrategy = {
  bid(task: TaskView, context: BidContext): number | null;
  /** Told how each auction and each won task turned out, for strategies that learn. */
  onOutcome?(outcome: "won" | "lost" | "succeeded" | "failed"): void;
};

export interface MatchStrategyOptions {
  /** The price for a task that fits this agent's profile. */
  baseSats: number;
  /** Words that make a task fit (matched in its description, case-insensitively). */
  keywords?: readonly string[];
  /** Relative spread around the price, so that equal agents do not tie: 0.1 is ±10 %. */
  jitter?: number;
  /** Price multiplier for a task that does not fit; null stays out of it. Default 3. */
  offProfileMultiplier?: number | null;
  /** Bids never go above this (a task's own cap still applies). */
  maxSats?: number;
  random?: () => number;
}

function fits(task: TaskView, keywords: readonly string[], capabilities: readonly string[]): boolean {
  if (task.required_capabilities.length > 0) return true; // the coordinator already checked them
  const text = task.description.toLowerCase();
  return [...keywords, ...capabilities].some((word) => text.includes(word.toLowerCase()));
}

/** Clamp a price to 1 … the task's cap and the strategy's ceiling. */
export function clampBid(sats: number, task: TaskView, maxSats = 1_000_000): number {
  const ceiling = Math.min(maxSats, task.max_bid_sats ?? Number.POSITIVE_INFINITY);
  return Math.max(1, Math.min(Math.round(sats), ceiling));
}

/**
 * Capability and keyword match: a task that fits gets a bid near the base price; one that does
 * not gets a high bid (or none). A busy agent adds a surcharge per running task.
 */
export function matchStrategy(options: MatchStrategyOptions): BidStrategy {
  const random = options.random ?? Math.random;
  const jitter = options.jitter ?? 0.1;
  const offProfile = options.offProfileMultiplier === undefined ? 3 : options.offProfileMultiplier;
  return {
    bid(task, context) {
      if (context.running >= context.maxConcurrent) return null;
      const matched = fits(task, options.keywords ?? [], context.capabilities);
      if (!matched && offProfile === null) return null;
      const load = 1 + 0.25 * context.running;
      const spread = 1 + jitter * (2 * random() - 1);
      return clampBid(
        options.baseSats * (matched ? 1 : (offProfile ?? 1)) * load * spread,
        task,
        options.maxSats,
      );
    },
  };
}

export interface AdaptiveStrategyOptions extends MatchStrategyOptions {
  /** How far one outcome moves the price: 0.05 is 5 %. */
  step?: number;
  /** The win rate it aims for; winning more raises the price, less lowers it. */
  targetWinRate?: number;
}

/**
 * Moves its price with its own record: above the target win rate it asks more, below it asks
 * less; a failed task makes it more careful (dearer), a success cheaper. The multiplier stays
 * between 0.25 and 4 times the base.
 */
export function adaptiveStrategy(options: AdaptiveStrategyOptions): BidStrategy & { multiplier(): number } {
  const inner = matchStrategy(options);
  const step = options.step ?? 0.05;
  const target = options.targetWinRate ?? 0.5;
  let multiplier = 1;
  let wins = 0;
  let auctions = 0;
  const move = (factor: number) => {
    multiplier = Math.min(4, Math.max(0.25, multiplier * factor));
  };
  return {
    bid(task, context) {
      const price = inner.bid(task, context);
      return price === null ? null : clampBid(price * multiplier, task, options.maxSats);
    },
    onOutcome(outcome) {
      if (outcome === "won" || outcome === "lost") {
        auctions += 1;
        if (outcome === "won") wins += 1;
        move(wins / auctions > target ? 1 + step : 1 - step);
      } else {
        move(outcome === "failed" ? 1 + 2 * step : 1 - step / 2);
      }
    },
    multiplier: () => multiplier,
  };
}
