// The stall ledger is pure (times in, spans out): no storage, so no engine to run on.
import { describe, expect, it } from "vitest";
import { MAX_STALLS, STALL_THRESHOLD_MS, StallLedger, stalledMs } from "../../src/coordinator/stalls.js";
import { START } from "./scenario.js";

const at = (ms: number) => new Date(START + ms).toISOString();

describe("the stall ledger", () => {
  it("records a tick that ran late past the threshold as a stall ending now, and ordinary jitter as none", () => {
    const ledger = new StallLedger(30_000);
    expect(ledger.note(3, START + 100)).toBeUndefined();
    expect(ledger.note(STALL_THRESHOLD_MS, START + 500)).toBeUndefined();
    expect(ledger.note(70_000, START + 80_000)).toEqual({ from: at(10_000), until: at(80_000) });
    expect(ledger.stalls).toEqual([{ from: at(10_000), until: at(80_000) }]);
  });

  it("keeps a stall until the server has run un-stalled for the keep time since, not counting later stalls", () => {
    const ledger = new StallLedger(30_000);
    ledger.note(10_000, START + 10_000); // stalled 0–10 s
    ledger.note(20_000, START + 40_000); // stalled 20–40 s: 10 s un-stalled since the first
    ledger.note(0, START + 59_999); // 10 + 19.999 s un-stalled since the first
    expect(ledger.stalls).toHaveLength(2);
    ledger.note(0, START + 60_000); // 30 s un-stalled since the first: it can change nothing now
    expect(ledger.stalls).toEqual([{ from: at(20_000), until: at(40_000) }]);
    ledger.note(0, START + 69_999);
    expect(ledger.stalls).toEqual([{ from: at(20_000), until: at(40_000) }]);
    ledger.note(0, START + 70_000);
    expect(ledger.stalls).toEqual([]);
  });

  it("holds at most MAX_STALLS, dropping the oldest", () => {
    const ledger = new StallLedger(86_400_000);
    for (let i = 1; i <= MAX_STALLS + 5; i += 1) ledger.note(1000, START + i * 2000);
    expect(ledger.stalls).toHaveLength(MAX_STALLS);
    expect(ledger.stalls[0]?.until).toBe(at(6 * 2000));
  });

  it("measures how much of a span was stalled", () => {
    const stalls = [
      { from: at(0), until: at(10_000) },
      { from: at(20_000), until: at(30_000) },
    ];
    expect(stalledMs(stalls, START + 5_000, START + 25_000)).toBe(10_000);
    expect(stalledMs(stalls, START + 10_000, START + 20_000)).toBe(0);
    expect(stalledMs([], START, START + 60_000)).toBe(0);
  });
});
