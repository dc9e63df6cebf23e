/**
 * Wrong credentials are limited per client address, so the operator key cannot be guessed
 * online, while agents on that address keep working. SQLite only: the limiter lives in the
 * web layer's memory, whatever the engine (the tokens it checks are tested on both in api.test.ts).
 */
import { describe, expect, it } from "vitest";
import { addressKey } from "../../src/web/auth-failures.js";
import { buildTestApp, OPERATOR_KEY } from "../helpers/app.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

const GUESSER = "203.0.113.7";
const BYSTANDER = "198.51.100.9";

describe("failed authentication", () => {
  it("answers 429 after the limit of wrong keys from one address, even to the right key, with a clear message", async () => {
    const t = await buildTestApp({ authFailureLimit: 5 });
    const worker = await t.agent("worker");
    const guess = (n: number, remoteAddress = GUESSER) =>
      t.app.inject({
        url: "/api/events",
        headers: { authorization: `Bearer guess-${n}` },
        remoteAddress,
      });
    const statuses: number[] = [];
    for (let n = 0; n < 8; n++) statuses.push((await guess(n)).statusCode);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    const limited = await guess(99);
    expect(limited.json<Json>().error).toMatchObject({
      code: "RATE_LIMITED",
      details: { limit: "auth_failures", retry_after: expect.any(Number) },
    });
    expect(limited.json<Json>().error.message).toMatch(/too many failed authentications/);

    const rightKey = await t.app.inject({
      url: "/api/events",
      headers: { authorization: `Bearer ${OPERATOR_KEY}` },
      remoteAddress: GUESSER,
    });
    expect(rightKey.statusCode).toBe(429);
    // Agents on that address still work: their tokens cannot be guessed anyway.
    const agent = await t.app.inject({ url: "/api/events", headers: worker.auth, remoteAddress: GUESSER });
    expect(agent.statusCode).toBe(200);
    // Another address is not affected.
    expect((await guess(100, BYSTANDER)).statusCode).toBe(401);
    const bystander = await t.app.inject({
      url: "/api/events",
      headers: { authorization: `Bearer ${OPERATOR_KEY}` },
      remoteAddress: BYSTANDER,
    });
    expect(bystander.statusCode).toBe(200);
  });

  it("does not let another site's page spend an address's allowance and lock the operator out", async () => {
    const t = await buildTestApp({ authFailureLimit: 3 });
    // What <img src="http://127.0.0.1:3000/api/stream?token=x"> tags on any page would send.
    for (let n = 0; n < 10; n++) {
      const response = await t.app.inject({
        url: `/api/stream?token=guess-${n}`,
        headers: { "sec-fetch-site": "cross-site" },
        remoteAddress: GUESSER,
      });
      expect(response.statusCode).toBe(403);
    }
    const operator = await t.app.inject({
      url: "/api/events",
      headers: { authorization: `Bearer ${OPERATOR_KEY}` },
      remoteAddress: GUESSER,
    });
    expect(operator.statusCode).toBe(200);
  });

  it("counts an IPv6 address by its /64, so one host cannot guess afresh from each of its addresses", async () => {
    const t = await buildTestApp({ authFailureLimit: 2 });
    const from = (remoteAddress: string) =>
      t.app.inject({ url: "/api/events", headers: { authorization: "Bearer wrong" }, remoteAddress });
    expect((await from("2001:db8:1:2::1")).statusCode).toBe(401);
    expect((await from("2001:db8:1:2:ffff::9")).statusCode).toBe(401);
    expect((await from("2001:0db8:0001:0002:aaaa:bbbb:cccc:dddd")).statusCode).toBe(429);
    expect((await from("2001:db8:1:3::1")).statusCode).toBe(401);
    expect(addressKey("::ffff:192.0.2.1")).toBe("192.0.2.1");
    expect(addressKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
  });

  it("lets the address try again once the window has passed", async () => {
    const t = await buildTestApp({ authFailureLimit: 2 });
    const attempt = () =>
      t.app.inject({
        url: "/api/events",
        headers: { authorization: "Bearer wrong" },
        remoteAddress: GUESSER,
      });
    expect([
      (await attempt()).statusCode,
      (await attempt()).statusCode,
      (await attempt()).statusCode,
    ]).toEqual([401, 401, 429]);
    t.clock.advance(14 * 60_000);
    expect((await attempt()).statusCode).toBe(429);
    t.clock.advance(60_000);
    expect((await attempt()).statusCode).toBe(401);
  });

  it("counts wrong keys at the dashboard's login form as well", async () => {
    const t = await buildTestApp({ authFailureLimit: 3 });
    const login = await t.app.inject({ url: "/login", headers: { accept: "text/html" } });
    const token = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
    const cookie = `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value}`;
    const attempt = (key: string) =>
      t.app.inject({
        method: "POST",
        url: "/login",
        headers: { "content-type": "application/x-www-form-urlencoded", cookie },
        payload: new URLSearchParams({ _csrf: token, key, next: "/" }).toString(),
        remoteAddress: GUESSER,
      });
    const statuses = [];
    for (const key of ["a", "b", "c", "d", OPERATOR_KEY]) statuses.push((await attempt(key)).statusCode);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    expect((await attempt(OPERATOR_KEY)).body).toContain("too many failed authentications");
  });
});
