/**
 * Agent tokens can be taken back: a deregistered agent's token is refused at once and its open
 * streams are closed, and an agent's token can be rotated by the agent or the operator.
 */
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { buildTestApp, OPERATOR_KEY, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

async function listening(engine: EngineName) {
  const t = await buildTestApp({ engine });
  await t.app.listen({ host: "127.0.0.1", port: 0 });
  return { ...t, port: (t.app.server.address() as AddressInfo).port };
}

/** An open stream with the token in its query, as a browser would open it. */
async function openStream(port: number, token: string) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/api/stream?token=${token}`);
  const messages: string[] = [];
  socket.on("message", (data: Buffer) => messages.push(data.toString()));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  return { socket, messages, closed };
}

const readEvents = (t: TestApp<EngineName>, headers: Record<string, string>) =>
  t.app.inject({ url: "/api/events", headers });

describe.each(ENGINES)("revoking agent tokens on $name", ({ name: engine }) => {
  it("refuses a deregistered agent's token at once, for reads and streams alike", async () => {
    const t = await listening(engine);
    const worker = await t.agent("worker");
    expect((await readEvents(t, worker.auth)).statusCode).toBe(200); // now cached
    const left = await t.app.inject({
      method: "DELETE",
      url: `/api/agents/${worker.id}`,
      headers: t.operator,
    });
    expect(left.statusCode).toBe(200);
    const after = await readEvents(t, worker.auth);
    expect(after.statusCode).toBe(401);
    expect(after.json<Json>().error.code).toBe("UNAUTHORIZED");
    const refused = await new Promise<number>((resolve) => {
      const socket = new WebSocket(`ws://127.0.0.1:${t.port}/api/stream?token=${worker.token}`);
      socket.on("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0));
      socket.on("open", () => resolve(101));
    });
    expect(refused).toBe(401);
  });

  it("closes a deregistered agent's open stream, whoever deregistered it", async () => {
    const t = await listening(engine);
    const worker = await t.agent("worker");
    const stream = await openStream(t.port, worker.token);
    await t.app.inject({ method: "DELETE", url: `/api/agents/${worker.id}`, headers: worker.auth });
    const { code, reason } = await stream.closed;
    expect(code).toBe(4401);
    expect(reason).toMatch(/revoked/);
    // Nothing after the leave reached it.
    await t.task();
    expect(stream.messages.join("")).not.toContain("task.created");
  });

  it("rotates a token: the new one works, the old one is refused and its streams closed, and the log says so", async () => {
    const t = await listening(engine);
    const worker = await t.agent("worker");
    const stream = await openStream(t.port, worker.token);
    const rotated = await t.app.inject({
      method: "POST",
      url: `/api/agents/${worker.id}/token`,
      headers: worker.auth,
    });
    expect(rotated.statusCode).toBe(200);
    const { token } = rotated.json<Json>();
    expect(token).toMatch(/^swarm_/);
    expect(token).not.toBe(worker.token);
    expect((await readEvents(t, worker.auth)).statusCode).toBe(401);
    expect((await readEvents(t, { authorization: `Bearer ${token}` })).statusCode).toBe(200);
    expect((await stream.closed).code).toBe(4401);
    const { events } = await t.eventLog.listEvents({ types: ["agent.token_rotated"] });
    expect(events).toMatchObject([{ agent_id: worker.id, data: { by: "agent" } }]);
    expect(JSON.stringify(events)).not.toContain(token);
    // The operator may rotate it too.
    const byOperator = await t.app.inject({
      method: "POST",
      url: `/api/agents/${worker.id}/token`,
      headers: t.operator,
    });
    expect(byOperator.statusCode).toBe(200);
    expect((await readEvents(t, { authorization: `Bearer ${token}` })).statusCode).toBe(401);
  });

  it("refuses to rotate another agent's token, an unknown agent's, or a departed one's", async () => {
    const t = await buildTestApp({ engine });
    const [worker, other] = [await t.agent("worker"), await t.agent("other")];
    const rotate = (id: string, headers: Record<string, string>) =>
      t.app.inject({ method: "POST", url: `/api/agents/${id}/token`, headers });
    expect((await rotate(worker.id, other.auth)).statusCode).toBe(403);
    expect((await rotate("no-such-agent", t.operator)).json<Json>().error.code).toBe("AGENT_NOT_FOUND");
    await t.app.inject({ method: "DELETE", url: `/api/agents/${other.id}`, headers: t.operator });
    expect((await rotate(other.id, t.operator)).json<Json>().error.code).toBe("AGENT_LEFT");
    expect((await readEvents(t, worker.auth)).statusCode).toBe(200);
  });
});

/** Log in through the form; returns the session and CSRF cookies. */
async function logIn(t: TestApp<EngineName>) {
  const login = await t.app.inject({ url: "/login", headers: { accept: "text/html" } });
  const token = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
  const csrf = `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value}`;
  const loggedIn = await t.app.inject({
    method: "POST",
    url: "/login",
    headers: { ...FORM, cookie: csrf },
    payload: new URLSearchParams({ _csrf: token, key: OPERATOR_KEY, next: "/" }).toString(),
  });
  const session = `swarm_session=${loggedIn.cookies.find((c) => c.name === "swarm_session")?.value}`;
  return { session, csrf };
}

const FORM = { "content-type": "application/x-www-form-urlencoded" };

/** A live page opened with `cookie`, resolved with its close code. */
async function livePage(port: number, cookie: string) {
  const page = new WebSocket(`ws://127.0.0.1:${port}/live?view=overview`, { headers: { cookie } });
  const closed = new Promise<number>((resolve) => page.on("close", (code) => resolve(code)));
  await new Promise((resolve) => page.once("message", resolve));
  return { closed };
}

describe.each(ENGINES)("logging out on $name", ({ name: engine }) => {
  it("closes the live pages of that login at once", async () => {
    const t = await listening(engine);
    const { session, csrf } = await logIn(t);
    const { closed } = await livePage(t.port, session);
    const overview = await t.app.inject({
      url: "/",
      headers: { accept: "text/html", cookie: `${session}; ${csrf}` },
    });
    const pageToken = /name="_csrf" value="([^"]+)"/.exec(overview.body)?.[1] ?? "";
    const out = await t.app.inject({
      method: "POST",
      url: "/logout",
      headers: { ...FORM, cookie: `${session}; ${csrf}` },
      payload: new URLSearchParams({ _csrf: pageToken }).toString(),
    });
    expect(out.statusCode).toBe(303);
    expect(await closed).toBe(4401);
  });

  it("closes a login's live pages when the login expires", async () => {
    const t = await listening(engine);
    const { session } = await logIn(t);
    // A moment before the twelve hours are up.
    t.clock.advance(12 * 3600_000 - 200);
    expect(await (await livePage(t.port, session)).closed).toBe(4401);
  });
});
