/**
 * Dashboard logins are sessions kept on the server: logging out ends every copy of the cookie,
 * and a form's CSRF token is good only for the login it was made for, so a CSRF cookie planted
 * by a sibling origin (another port, a subdomain) forges nothing.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { buildTestApp, OPERATOR_KEY, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

const HTML = { accept: "text/html" };
const FORM = { "content-type": "application/x-www-form-urlencoded" };
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

/** A page's CSRF token and the _csrf cookie it came with, as seen with `cookie`. */
async function formCredentials(t: TestApp<EngineName>, cookie = "") {
  const page = await t.app.inject({ url: "/login", headers: { ...HTML, cookie } });
  const token = /name="_csrf" value="([^"]+)"/.exec(page.body)?.[1];
  const secret = page.cookies.find((c) => c.name === "_csrf")?.value;
  if (token === undefined || secret === undefined) throw new Error("no CSRF token on the page");
  return { token, secret };
}

/** Log in with the operator key; returns the session cookie as a Cookie header part. */
async function logIn(t: TestApp<EngineName>): Promise<string> {
  const { token, secret } = await formCredentials(t);
  const response = await t.app.inject({
    method: "POST",
    url: "/login",
    headers: { ...FORM, cookie: `_csrf=${secret}` },
    payload: form({ _csrf: token, key: OPERATOR_KEY, next: "/" }),
  });
  expect(response.statusCode).toBe(303);
  const session = response.cookies.find((c) => c.name === "swarm_session");
  if (session === undefined) throw new Error("no session cookie");
  return `swarm_session=${session.value}`;
}

/** The overview as `cookie` sees it: 200 when logged in, a redirect to the login otherwise. */
async function overviewStatus(t: TestApp<EngineName>, cookie: string): Promise<number> {
  return (await t.app.inject({ url: "/", headers: { ...HTML, cookie } })).statusCode;
}

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe.each(ENGINES)("dashboard sessions on $name", ({ name: engine }) => {
  it("logging out ends the session on the server: a copy of the cookie stops working", async () => {
    const t = await buildTestApp({ engine });
    const session = await logIn(t);
    const copied = session;
    expect(await overviewStatus(t, session)).toBe(200);
    const { token, secret } = await formCredentials(t, session);
    const out = await t.app.inject({
      method: "POST",
      url: "/logout",
      headers: { ...FORM, cookie: `${session}; _csrf=${secret}` },
      payload: form({ _csrf: token }),
    });
    expect(out.statusCode).toBe(303);
    expect(await overviewStatus(t, copied)).toBe(303);
    // Another login is a new session and works.
    expect(await overviewStatus(t, await logIn(t))).toBe(200);
  });

  it("keeps sessions across a restart of the server, on its database", async () => {
    // SQLite: a file that the second app opens again; PostgreSQL: the first app's database.
    let path: string | undefined;
    if (engine === "sqlite") {
      const dir = mkdtempSync(join(tmpdir(), "swarm-sessions-"));
      dirs.push(dir);
      path = join(dir, "swarm.db");
    }
    const first = await buildTestApp({ engine, path });
    const session = await logIn(first);
    await first.app.close();
    await first.coordinator.stop();
    await first.eventLog.close();
    const second = await buildTestApp({ engine, path, url: first.url });
    expect(await overviewStatus(second, session)).toBe(200);
  });

  it("refuses a form whose CSRF token and cookie were planted by a sibling origin, writing nothing", async () => {
    const t = await buildTestApp({ engine });
    const victim = await logIn(t);
    // The attacker fetched a page of its own (a valid token and _csrf secret, for no login) and
    // plants that secret as the victim's _csrf cookie; the victim's browser adds the session.
    const planted = await formCredentials(t);
    const forged = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie: `${victim}; _csrf=${planted.secret}` },
      payload: form({ _csrf: planted.token, description: "posted by a planted cookie" }),
    });
    expect(forged.statusCode).toBe(403);
    expect(forged.body).toContain("This form has expired");
    expect((await t.coordinator.store.listTasks({ limit: 10 })).tasks).toHaveLength(0);

    // The attacker's own login makes a token for its own session, not the victim's.
    const attacker = await logIn(t);
    const attackers = await formCredentials(t, attacker);
    const crossed = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie: `${victim}; _csrf=${attackers.secret}` },
      payload: form({ _csrf: attackers.token, description: "posted with another login's token" }),
    });
    expect(crossed.statusCode).toBe(403);
    expect((await t.coordinator.store.listTasks({ limit: 10 })).tasks).toHaveLength(0);

    // The victim's own page's token still works.
    const own = await formCredentials(t, victim);
    const posted = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie: `${victim}; _csrf=${own.secret}` },
      payload: form({ _csrf: own.token, description: "posted by the operator" }),
    });
    expect(posted.statusCode).toBe(303);
  });
});
