/**
 * Prometheus metrics, on a registry of the app's own (tests build many apps in one process):
 * events written by type, HTTP latency, open websockets, auction durations, tasks by status.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { CoordinatorReads, ReplicaStatus } from "../coordinator/port.js";
import type { EventLogPort } from "../storage/port.js";

export interface Metrics {
  registry: Registry;
  httpDuration: Histogram<"method" | "route" | "status">;
  openWebsockets: Gauge<"kind">;
  refusedWebsockets: Counter<"limit">;
  liveMessages: Counter;
  stop(): void;
}

export function createMetrics(
  eventLog: EventLogPort,
  store: Pick<CoordinatorReads, "taskCounts">,
  options: { defaultMetrics?: boolean; replica?: ReplicaStatus } = {},
): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  const { replica } = options;
  if (replica !== undefined) {
    // Labelled with the replica, as /healthz names it: a scrape says which replica it came from.
    new Gauge({
      name: "swarm_replica_lease_held",
      help: "1 while this replica holds the maintenance lease (retention and rollups run here), else 0",
      labelNames: ["replica"] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.set({ replica: replica.id }, replica.leader ? 1 : 0);
      },
    });
    new Gauge({
      name: "swarm_replica_peers",
      help: "Other coordinator replicas running on the same database, as last counted",
      labelNames: ["replica"] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.set({ replica: replica.id }, replica.peers);
      },
    });
  }
  const eventsWritten = new Counter({
    name: "swarm_events_written_total",
    help: "Events committed to event_log, by type (by any replica: each one hears every event)",
    labelNames: ["type"] as const,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: "swarm_http_request_duration_seconds",
    help: "HTTP request latency",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const openWebsockets = new Gauge({
    name: "swarm_open_websockets",
    help: "Open websocket connections",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const auctionDuration = new Histogram({
    name: "swarm_auction_duration_seconds",
    help: "From an auction's opening to its close",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  // Six rows kept by triggers beside the tasks (on both engines): a scrape costs the same with a
  // million tasks as with none, and is open to anyone.
  new Gauge({
    name: "swarm_tasks",
    help: "Tasks by status",
    labelNames: ["status"] as const,
    registers: [registry],
    async collect() {
      const counts = await store.taskCounts();
      this.reset();
      for (const [status, count] of Object.entries(counts)) this.set({ status }, count);
    },
  });
  new Gauge({
    name: "swarm_event_log_commits",
    help: "Transactions committed by the event log since start (group commit: events / commits = batch size)",
    registers: [registry],
    collect() {
      this.set(eventLog.writeStats().transactions);
    },
  });
  new Gauge({
    name: "swarm_event_log_events_committed",
    help: "Events committed by the event log since start",
    registers: [registry],
    collect() {
      this.set(eventLog.writeStats().events);
    },
  });
  // Opening times of auctions in progress, to time them at their close; bounded by open auctions.
  const opened = new Map<string, number>();
  const stop = eventLog.subscribe((event) => {
    eventsWritten.inc({ type: event.event_type });
    if (event.task_id === null) return;
    if (event.event_type === "task.bidding") opened.set(event.task_id, Date.parse(event.timestamp));
    else if (event.event_type === "auction.closed") {
      const start = opened.get(event.task_id);
      opened.delete(event.task_id);
      if (start !== undefined) auctionDuration.observe((Date.parse(event.timestamp) - start) / 1000);
    } else if (event.event_type === "task.cancelled") opened.delete(event.task_id);
  });
  const liveMessages = new Counter({
    name: "swarm_dashboard_messages_total",
    help: "HTML fragments pushed to live dashboard pages",
    registers: [registry],
  });
  const refusedWebsockets = new Counter({
    name: "swarm_refused_websockets_total",
    help: "Websockets closed on arrival, by the limit they met: server (SWARM_MAX_SOCKETS) or client (SWARM_MAX_SOCKETS_PER_CLIENT)",
    labelNames: ["limit"] as const,
    registers: [registry],
  });
  return { registry, httpDuration, openWebsockets, refusedWebsockets, liveMessages, stop };
}
