/**
 * The listeners of one event log, told of committed events in seq order. Both engines call
 * `announce` only after a commit, with the events it stored.
 */
import type { Logger } from "../logger.js";
import type { EventListener, StoredEvent, SubscriptionFilter } from "./types.js";
import { normalizeSubscriptionFilter } from "./validate.js";

/** A subscriber's filter once checked: `types` is always a list here. */
type CheckedSubscriptionFilter = Omit<SubscriptionFilter, "types" | "event_type"> & {
  types?: readonly string[];
};

interface Subscription {
  listener: EventListener;
  filter: CheckedSubscriptionFilter | undefined;
}

function matches(event: StoredEvent, filter: CheckedSubscriptionFilter | undefined): boolean {
  if (filter === undefined) return true;
  return (
    (filter.types === undefined || filter.types.length === 0 || filter.types.includes(event.event_type)) &&
    (filter.source === undefined || filter.source === event.source) &&
    (filter.task_id === undefined || filter.task_id === event.task_id) &&
    (filter.agent_id === undefined || filter.agent_id === event.agent_id)
  );
}

export class Subscribers {
  private readonly subscriptions = new Set<Subscription>();

  constructor(private readonly logger: Logger) {}

  get size(): number {
    return this.subscriptions.size;
  }

  add(listener: EventListener, filter?: SubscriptionFilter): () => void {
    const subscription: Subscription = {
      listener,
      filter: normalizeSubscriptionFilter(filter) as CheckedSubscriptionFilter | undefined,
    };
    this.subscriptions.add(subscription);
    return () => {
      this.subscriptions.delete(subscription);
    };
  }

  clear(): void {
    this.subscriptions.clear();
  }

  announce(events: readonly StoredEvent[]): void {
    if (events.length === 0 || this.subscriptions.size === 0) return;
    for (const event of events) {
      for (const subscription of this.subscriptions) {
        if (!matches(event, subscription.filter)) continue;
        try {
          subscription.listener(event);
        } catch (error) {
          // A faulty listener is an operational problem: it must not undo or block a commit.
          this.logger.error({ err: error, seq: event.seq }, "event listener threw");
        }
      }
    }
  }
}
