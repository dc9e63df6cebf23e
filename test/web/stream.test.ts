import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { StoredEvent } from "../../src/event-log/types.js";
import type { EventLogPort } from "../../src/storage/port.js";
import { buildTestApp, type EngineName } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

type Message = { type: "event"; event: StoredEvent } | { type: "resync"; oldest_seq: number };

type Options = Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine">;

/** The app under test on `engine`, listening on a free port. */
async function listening(engine: EngineName, options: Options = {}) {
  const t = await buildTestApp<EngineName>({ ...options, engine });
  await t.app.listen({ host: "127.0.0.1", port: 0 });
  const address = t.app.server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  const base = `ws://127.0.0.1:${address.port}/api/stream`;
  return { ...t, base };
}

/** A stream client that records what it receives. */
function connect(url: string, headers: Record<string, string> = {}) {
  const socket = new WebSocket(url, { headers });
  const messages: Message[] = [];
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  socket.on("message", (data: Buffer) => messages.push(JSON.parse(data.toString()) as Message));
  const opened = new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("unexpected-response", (req, res) => {
      req.destroy(); // an upgrade refused with an HTTP answer leaves its connection open otherwise
      reject(new Error(`HTTP ${res.statusCode ?? "?"}`));
    });
    socket.once("error", reject);
  });
  const seqs = () => messages.flatMap((m) => (m.type === "event" ? [m.event.seq] : []));
  return {
    socket,
    messages,
    opened,
    closed,
    seqs,
    async waitFor(check: () => boolean, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out; have ${JSON.stringify(seqs().slice(-5))}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
  };
}

const info = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ event_type: "system.info", source: "test", data: { i } }));

describe.each(ENGINES)("the live stream on $name", ({ name: engine }) => {
  it("sends the backfill after after_seq, then live events, filtered", async () => {
    const t = await listening(engine);
    await t.eventLog.logEvents([
      ...info(3),
      { event_type: "task.created", source: "c", task_id: "t1" },
      ...info(1),
    ]);
    const all = connect(`${t.base}?after_seq=2`, t.operator);
    const tasks = connect(`${t.base}?after_seq=0&type=task.created,task.assigned`, t.operator);
    await Promise.all([all.opened, tasks.opened]);
    await all.waitFor(() => all.seqs().length === 3);
    expect(all.seqs()).toEqual([3, 4, 5]);
    await t.eventLog.logEvents([{ event_type: "task.assigned", source: "c", task_id: "t1" }, ...info(1)]);
    await all.waitFor(() => all.seqs().length === 5);
    await tasks.waitFor(() => tasks.seqs().length === 2);
    expect(all.seqs()).toEqual([3, 4, 5, 6, 7]);
    expect(tasks.seqs()).toEqual([4, 6]);
    expect(all.messages[0]).toMatchObject({
      type: "event",
      event: { seq: 3, event_type: "system.info", data: { i: 2 } },
    });
    all.socket.close();
    tasks.socket.close();
  });

  it("starts from now without after_seq", async () => {
    const t = await listening(engine);
    await t.eventLog.logEvents(info(4));
    const live = connect(t.base, t.operator);
    await live.opened;
    await t.eventLog.logEvents(info(1));
    await live.waitFor(() => live.seqs().length === 1);
    expect(live.seqs()).toEqual([5]);
    live.socket.close();
  });

  it("delivers every event exactly once across reconnects while events keep flowing", async () => {
    const t = await listening(engine);
    let writing = true;
    const writer = (async () => {
      while (writing) {
        await t.eventLog.logEvents(info(7));
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    const received: number[] = [];
    let lastSeq = 0;
    for (let round = 0; round < 6; round += 1) {
      const client = connect(`${t.base}?after_seq=${lastSeq}`, t.operator);
      await client.opened;
      await client.waitFor(() => client.seqs().length >= 40);
      client.socket.terminate(); // a dropped connection, mid-flow
      await client.closed;
      received.push(...client.seqs());
      lastSeq = client.seqs().at(-1) ?? lastSeq;
    }
    writing = false;
    await writer;
    const final = connect(`${t.base}?after_seq=${lastSeq}`, t.operator);
    await final.opened;
    const latest = await t.eventLog.latestSeq();
    await final.waitFor(() => (final.seqs().at(-1) ?? lastSeq) >= latest);
    received.push(...final.seqs());
    final.socket.close();
    expect(received).toEqual(Array.from({ length: latest }, (_, i) => i + 1));
  });

  it("says resync first when retention removed events after after_seq", async () => {
    const t = await listening(engine);
    const old = new Date(t.clock.now().getTime() - 10 * 86_400_000).toISOString();
    await t.eventLog.logEvents(info(5).map((e) => ({ ...e, timestamp: old })));
    await t.eventLog.logEvents(info(2));
    await t.eventLog.pruneEvents(1);
    const client = connect(`${t.base}?after_seq=2`, t.operator);
    await client.opened;
    await client.waitFor(() => client.messages.length === 3);
    expect(client.messages[0]).toEqual({ type: "resync", oldest_seq: 6 });
    expect(client.seqs()).toEqual([6, 7]);
    client.socket.close();
  });

  it("closes a consumer that stops reading, with a code that says to reconnect", async () => {
    const t = await listening(engine, { stream: { maxBufferedBytes: 256 * 1024 } });
    const client = connect(`${t.base}?after_seq=0`, t.operator);
    await client.opened;
    // Stop reading at the TCP level, as a stuck client would.
    (client.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const blob = "x".repeat(32 * 1024);
    for (let i = 0; i < 400; i += 1) {
      await t.eventLog.logEvent({ event_type: "system.info", source: "test", data: { blob } });
    }
    const open = async () =>
      (await t.app.metrics.openWebsockets.get()).values.find((v) => v.labels.kind === "api")?.value;
    await client.waitFor(() => false, 0).catch(() => undefined);
    const deadline = Date.now() + 10_000;
    while ((await open()) !== 0 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await open()).toBe(0); // the server let go of it
    (client.socket as unknown as { _socket: { resume(): void } })._socket.resume();
    const { code, reason } = await client.closed;
    expect(code).toBe(4001);
    expect(reason).toContain("after_seq");
    expect(client.seqs().length).toBeLessThan(400);
  });

  it("drops a connection that stops answering pings", async () => {
    const t = await listening(engine, { stream: { pingIntervalMs: 50 } });
    const client = connect(t.base, t.operator);
    await client.opened;
    (client.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    const deadline = Date.now() + 5000;
    let open = 1;
    while (open !== 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      open =
        (await t.app.metrics.openWebsockets.get()).values.find((v) => v.labels.kind === "api")?.value ?? 0;
    }
    expect(open).toBe(0);
    client.socket.terminate();
  });

  it("needs credentials when a key is set: a header or ?token=", async () => {
    const t = await listening(engine);
    const anonymous = connect(t.base);
    await expect(anonymous.opened).rejects.toThrow("HTTP 401");
    const agent = await t.agent("a");
    const byQuery = connect(`${t.base}?token=${agent.token}`);
    await byQuery.opened;
    byQuery.socket.close();
    const wrong = connect(`${t.base}?token=nope`);
    await expect(wrong.opened).rejects.toThrow("HTTP 401");
  });

  it("closes with 4400 and the reason when the filter cannot be used, however long the bad value", async () => {
    const t = await listening(engine);
    const tooLong = `bad.${"é".repeat(150)}`;
    for (const type of ["0", tooLong]) {
      const client = connect(`${t.base}?type=${encodeURIComponent(type)}`, t.operator);
      const { code, reason } = await client.closed;
      expect(code, type).toBe(4400); // before the fix: 1011, "backfill failed"
      expect(reason).toMatch(/type/);
      expect(Buffer.byteLength(reason)).toBeLessThanOrEqual(123);
    }
  });

  it("filters by event_type, the Python-era name of type, and refuses a parameter it does not take before upgrading", async () => {
    const t = await listening(engine);
    await t.eventLog.logEvents([...info(2), { event_type: "task.created", source: "c", task_id: "t1" }]);
    const tasks = connect(`${t.base}?after_seq=0&event_type=task.created`, t.operator);
    await tasks.opened;
    await tasks.waitFor(() => tasks.seqs().length === 1);
    await t.eventLog.logEvents([...info(1), { event_type: "task.created", source: "c", task_id: "t2" }]);
    await tasks.waitFor(() => tasks.seqs().length === 2);
    expect(tasks.seqs()).toEqual([3, 5]);
    tasks.socket.close();
    for (const query of ["after_seq=0&source=c", "after_seq=0&event=task.created"]) {
      const refused = connect(`${t.base}?${query}`, t.operator);
      await expect(refused.opened, query).rejects.toThrow("HTTP 400");
    }
    const both = connect(`${t.base}?type=task.created&event_type=task.created`, t.operator);
    await expect(both.opened).rejects.toThrow("HTTP 400");
  });

  it("refuses an after_seq too large to be exact, by name, instead of failing its backfill", async () => {
    const t = await listening(engine);
    const client = connect(`${t.base}?after_seq=${"9".repeat(40)}`, t.operator);
    await expect(client.opened).rejects.toThrow("HTTP 400"); // before the fix: opened, then 1011
  });
});

/** The TCP socket under a ws client, to stop reading or cut the connection as a stuck client would. */
const tcpOf = (client: ReturnType<typeof connect>) =>
  (client.socket as unknown as { _socket: { pause(): void; resume(): void; destroy(): void } })._socket;

/** Events of about 2 KB each, `count` of them: far more than the kernel's buffers hold. */
async function seedLarge(t: Awaited<ReturnType<typeof listening>>, count: number) {
  const blob = "x".repeat(2000);
  for (let start = 0; start < count; start += 1000) {
    await t.eventLog.logEvents(
      Array.from({ length: Math.min(1000, count - start) }, () => ({
        event_type: "system.info",
        source: "test",
        data: { blob },
      })),
    );
  }
}

const openStreams = async (t: Awaited<ReturnType<typeof listening>>) =>
  (await t.app.metrics.openWebsockets.get()).values.find((v) => v.labels.kind === "api")?.value;

async function until(check: () => boolean | Promise<boolean>, what: string) {
  for (let waited = 0; !(await check()); waited += 10) {
    if (waited > 20_000) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe.each(ENGINES)("backfill paced by the socket on $name", ({ name: engine }) => {
  it("holds at most its bound of unsent bytes for a reader that stalls, then resumes with every event once, in order, and goes live", async () => {
    const bound = 64 * 1024;
    const t = await listening(engine, { stream: { backfillBufferBytes: bound } });
    await seedLarge(t, 5000);
    const client = connect(`${t.base}?after_seq=0`, t.operator);
    await client.opened;
    tcpOf(client).pause();
    const server = [...t.app.websocketServer.clients][0];
    // The kernel's buffers fill first; then the backfill waits with its bound of bytes queued.
    await until(() => (server?.bufferedAmount ?? 0) >= bound, "the server queues bytes for it");
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Never more than the bound and the one event that crossed it (before the fix: megabytes).
    expect(server?.bufferedAmount).toBeLessThan(bound + 4096);
    await t.eventLog.logEvents(info(300)); // committed while the backfill waits
    tcpOf(client).resume();
    await client.waitFor(() => client.seqs().length === 5300, 30_000);
    expect(client.seqs()).toEqual(Array.from({ length: 5300 }, (_, i) => i + 1));
    await t.eventLog.logEvents(info(1));
    await client.waitFor(() => client.seqs().length === 5301);
    client.socket.close();
  });

  it("stops reading the log at once when a stalled reader's connection is reset mid-backfill", async () => {
    const t = await listening(engine);
    await seedLarge(t, 5000);
    const client = connect(`${t.base}?after_seq=0`, t.operator);
    await client.opened;
    tcpOf(client).pause();
    const server = [...t.app.websocketServer.clients][0];
    await until(() => (server?.bufferedAmount ?? 0) > 0, "the backfill waits on the socket");
    let pagesRead = 0;
    const log: EventLogPort = t.eventLog;
    const listEvents = log.listEvents.bind(log);
    log.listEvents = (filter) => {
      pagesRead += 1;
      return listEvents(filter);
    };
    tcpOf(client).destroy(); // unread data in its buffers: the server's side sees a reset
    await until(async () => (await openStreams(t)) === 0, "the server lets go of the stream");
    // Before the fix, it read on through the rest of the log (tens of pages) in one go.
    expect(pagesRead).toBeLessThanOrEqual(1);
  });
});

describe.each(ENGINES)("agents' stream presence on $name", ({ name: engine }) => {
  it("counts an agent as listening while its stream is open, and as lost once it closes; a poller as neither", async () => {
    const t = await listening(engine);
    const streamer = await t.agent("streamer");
    const poller = await t.agent("poller");
    const streamOf = async (id: string) =>
      (await t.app.inject({ url: `/api/agents/${id}`, headers: t.operator })).json<{
        agent: { stream: string };
      }>().agent.stream;
    expect(await streamOf(streamer.id)).toBe("none");
    const first = connect(t.base, streamer.auth);
    const second = connect(t.base, streamer.auth);
    await Promise.all([first.opened, second.opened]);
    await until(
      async () => (await streamOf(streamer.id)) === "listening",
      "the stream vouches for its agent",
    );
    // One of two streams closing leaves the agent listening on the other.
    first.socket.close();
    await first.closed;
    await until(async () => (await openStreams(t)) === 1, "the server sees the socket close");
    expect(await streamOf(streamer.id)).toBe("listening");
    second.socket.close();
    await until(async () => (await streamOf(streamer.id)) === "lost", "the last close is recorded");
    expect(await streamOf(poller.id)).toBe("none");
  });
});

describe.each(ENGINES)("websocket caps per client on $name", ({ name: engine }) => {
  it("refuses exactly the sockets one agent opens beyond its cap, while another agent's and the operator's streams open and hear events", async () => {
    const cap = 3;
    const t = await listening(engine, { maxSocketsPerClient: cap });
    const greedy = await t.agent("greedy");
    const honest = await t.agent("honest");
    // From the seq before the event each must hear: without after_seq a stream starts from the
    // newest seq when the server gets to it, which may be after an event logged on "open".
    const from = `${t.base}?after_seq=${await t.eventLog.latestSeq()}`;
    // A refused socket completes its handshake, then is closed on arrival.
    const greedyStreams = Array.from({ length: cap + 2 }, () => connect(from, greedy.auth));
    const others = [connect(from, honest.auth), connect(from, t.operator)];
    await Promise.all([...greedyStreams, ...others].map((client) => client.opened));
    await t.eventLog.logEvents(info(1));
    // Each socket either hears the event (admitted) or is closed (refused before it subscribed).
    const heard = (client: ReturnType<typeof connect>) =>
      Promise.race([
        client.closed.then(() => false),
        client.waitFor(() => client.seqs().length === 1).then(() => true),
      ]);
    const greedyHeard = await Promise.all(greedyStreams.map(heard));
    expect(greedyHeard.filter(Boolean)).toHaveLength(cap);
    expect(await Promise.all(others.map(heard))).toEqual([true, true]);
    const refused = greedyStreams.filter((_, i) => !greedyHeard[i]);
    for (const client of refused) {
      const { code, reason } = await client.closed;
      expect(code).toBe(1013);
      expect(reason).toContain(`limit of ${cap} websockets per client (SWARM_MAX_SOCKETS_PER_CLIENT)`);
    }
    const refusedMetric = await t.app.metrics.refusedWebsockets.get();
    expect(refusedMetric.values).toEqual([{ labels: { limit: "client" }, value: 2 }]);

    // A socket closed gives its place back to its own client.
    const admitted = greedyStreams.filter((_, i) => greedyHeard[i]);
    admitted[0]?.socket.close();
    await until(async () => (await openStreams(t)) === cap + 1, "the server sees the socket close");
    const again = connect(`${t.base}?after_seq=${await t.eventLog.latestSeq()}`, greedy.auth);
    await again.opened;
    await t.eventLog.logEvents(info(1));
    expect(await heard(again)).toBe(true);
    for (const client of [...admitted, ...others, again]) client.socket.close();
  });
});
