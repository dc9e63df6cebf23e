/**
 * Chart geometry, computed on the server: the templates draw these numbers as inline SVG, so
 * the dashboard needs no charting script and every label goes through the template's escaping.
 */
import type { AuctionSize } from "../../storage/coordinator-records.js";
import { TASK_STATUSES, type TaskStatus } from "../../coordinator/types.js";
import type { MinuteCount } from "../../event-log/types.js";

/** Event types grouped by their first word; anything else counts as `other`. */
export const EVENT_FAMILIES = ["task", "auction", "bid", "agent", "tool", "system", "other"] as const;
export type EventFamily = (typeof EVENT_FAMILIES)[number];
const FAMILY_SET = new Set<string>(EVENT_FAMILIES);

export function familyOf(eventType: string): EventFamily {
  const prefix = eventType.slice(0, eventType.indexOf("."));
  return FAMILY_SET.has(prefix) ? (prefix as EventFamily) : "other";
}

/** The smallest of 1, 2, 5 × 10^n that is at least `value`: a round top for an axis. */
export function niceCeiling(value: number): number {
  if (value <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

export interface StackSegment {
  family: EventFamily;
  count: number;
  y: number;
  height: number;
}

export interface MinuteBar {
  /** `YYYY-MM-DDTHH:MM` (UTC). */
  minute: string;
  x: number;
  width: number;
  total: number;
  segments: StackSegment[];
}

export interface EventsPerMinuteChart {
  width: number;
  height: number;
  plotTop: number;
  plotBottom: number;
  max: number;
  total: number;
  bars: MinuteBar[];
  gridLines: { y: number; value: number }[];
  xLabels: { x: number; text: string }[];
  legend: { family: EventFamily; count: number }[];
}

const MINUTE_CHART = { width: 640, height: 180, left: 36, right: 8, top: 10, bottom: 22 };

function minuteKey(time: Date): string {
  return time.toISOString().slice(0, 16);
}

/** A stacked bar per minute over the last `minutes` (the current minute last), by event family. */
export function eventsPerMinuteChart(
  counts: readonly MinuteCount[],
  now: Date,
  minutes = 60,
): EventsPerMinuteChart {
  const { width, height, left, right, top, bottom } = MINUTE_CHART;
  const first = Math.floor(now.getTime() / 60_000) - (minutes - 1);
  const perMinute = new Map<string, Map<EventFamily, number>>();
  const familyTotals = new Map<EventFamily, number>();
  for (const { minute, event_type, count } of counts) {
    const family = familyOf(event_type);
    let families = perMinute.get(minute);
    if (families === undefined) perMinute.set(minute, (families = new Map<EventFamily, number>()));
    families.set(family, (families.get(family) ?? 0) + count);
  }
  const columns = Array.from({ length: minutes }, (_, i) => {
    const minute = minuteKey(new Date((first + i) * 60_000));
    const families = perMinute.get(minute) ?? new Map<EventFamily, number>();
    let total = 0;
    for (const [family, count] of families) {
      total += count;
      familyTotals.set(family, (familyTotals.get(family) ?? 0) + count);
    }
    return { minute, families, total };
  });
  const max = niceCeiling(Math.max(0, ...columns.map((c) => c.total)));
  const plotBottom = height - bottom;
  const plotHeight = plotBottom - top;
  const slot = (width - left - right) / minutes;
  const bars = columns.map((column, i): MinuteBar => {
    let y = plotBottom;
    const segments: StackSegment[] = [];
    for (const family of EVENT_FAMILIES) {
      const count = column.families.get(family) ?? 0;
      if (count === 0) continue;
      const segmentHeight = (count / max) * plotHeight;
      y -= segmentHeight;
      segments.push({ family, count, y: round(y), height: round(segmentHeight) });
    }
    return {
      minute: column.minute,
      x: round(left + i * slot + slot * 0.1),
      width: round(slot * 0.8),
      total: column.total,
      segments,
    };
  });
  const gridLines = [0, 0.5, 1].map((share) => ({
    y: round(plotBottom - share * plotHeight),
    value: Math.round(share * max),
  }));
  const xLabels = [0, 15, 30, 45, minutes - 1]
    .filter((i) => i < minutes)
    .map((i) => ({
      x: round(left + i * slot + slot / 2),
      text: i === minutes - 1 ? "now" : `-${minutes - 1 - i}m`,
    }));
  const legend = EVENT_FAMILIES.filter((family) => familyTotals.has(family)).map((family) => ({
    family,
    count: familyTotals.get(family) ?? 0,
  }));
  return {
    width,
    height,
    plotTop: top,
    plotBottom,
    max,
    total: columns.reduce((sum, c) => sum + c.total, 0),
    bars,
    gridLines,
    xLabels,
    legend,
  };
}

export interface OutcomeBar {
  status: TaskStatus;
  count: number;
  percent: number;
  y: number;
  width: number;
}

export interface TaskOutcomeChart {
  width: number;
  height: number;
  labelWidth: number;
  barHeight: number;
  total: number;
  bars: OutcomeBar[];
}

/** One horizontal bar per task status, scaled to the largest. */
export function taskOutcomeChart(counts: Readonly<Record<TaskStatus, number>>): TaskOutcomeChart {
  const width = 320;
  const labelWidth = 86;
  const barHeight = 18;
  const gap = 8;
  const total = TASK_STATUSES.reduce((sum, status) => sum + counts[status], 0);
  const largest = Math.max(1, ...TASK_STATUSES.map((status) => counts[status]));
  const room = width - labelWidth - 60;
  const bars = TASK_STATUSES.map((status, i) => ({
    status,
    count: counts[status],
    percent: total === 0 ? 0 : Math.round((counts[status] / total) * 100),
    y: i * (barHeight + gap),
    width: counts[status] === 0 ? 0 : Math.max(2, round((counts[status] / largest) * room)),
  }));
  return { width, height: TASK_STATUSES.length * (barHeight + gap), labelWidth, barHeight, total, bars };
}

export interface AuctionBar extends AuctionSize {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface BidsPerAuctionChart {
  width: number;
  height: number;
  plotBottom: number;
  max: number;
  bars: AuctionBar[];
}

/** One bar per recent auction (oldest left), its height the number of bids in the current round. */
export function bidsPerAuctionChart(auctions: readonly AuctionSize[], slots = 20): BidsPerAuctionChart {
  const width = 320;
  const height = 150;
  const top = 16;
  const plotBottom = height - 4;
  const max = niceCeiling(Math.max(1, ...auctions.map((a) => a.bids)));
  const slot = width / slots;
  const bars = auctions.map((auction, i) => {
    const barHeight = auction.bids === 0 ? 1 : ((plotBottom - top) * auction.bids) / max;
    return {
      ...auction,
      x: round(i * slot + slot * 0.15),
      y: round(plotBottom - barHeight),
      width: round(slot * 0.7),
      height: round(barHeight),
    };
  });
  return { width, height, plotBottom, max, bars };
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}
