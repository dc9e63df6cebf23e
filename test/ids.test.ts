import { describe, expect, it } from "vitest";
import { newId, shortId } from "../src/ids.js";

describe("short ids", () => {
  it("tell apart 100 ids made in one burst, whose leading digits are the same timestamp", () => {
    const ids = Array.from({ length: 100 }, () => newId());
    // The premise: a UUIDv7 begins with its millisecond, so a burst shares its first 8 hex digits.
    expect(new Set(ids.map((id) => id.slice(0, 8))).size).toBeLessThan(10);
    const short = ids.map(shortId);
    expect(new Set(short).size).toBe(100);
    for (const [index, id] of ids.entries()) {
      expect(short[index]).toBe(`…${id.slice(-8)}`);
    }
  });

  it("show an id that is not a UUID whole when short, else by its head and tail", () => {
    expect(shortId("t-42")).toBe("t-42");
    expect(shortId("deploy-web-7")).toBe("deploy-web-7");
    expect(shortId("deploy-frontend-build-0193")).toBe("deplo…d-0193");
    expect(shortId("deploy-frontend-build-0194")).not.toBe(shortId("deploy-frontend-build-0193"));
    expect(shortId(null)).toBe("");
    expect(shortId(undefined)).toBe("");
  });
});
