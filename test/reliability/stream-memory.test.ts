/**
 * What a stream that never reads costs the server: the product in its own process, a log of
 * tens of thousands of events, and a few hundred clients that ask for all of it
 * (`after_seq=0`), complete the websocket handshake and then read nothing more. The figure
 * measured here is the one the README gives per socket.
 */
import { randomBytes } from "node:crypto";
import { connect as connectTcp, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { BENCH_KEY, readMetrics, startProduct } from "../../bench/harness.js";
import { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { silentLogger } from "../helpers/event-log.js";
import { eventually } from "../helpers/stack.js";
import { tempDbPath } from "../helpers/temp-dir.js";

const EVENTS = 25_000;
const STALLED_STREAMS = 200;
/**
 * Measured at 153-190 KiB of resident memory and 156-225 KiB live (the README's figures); twice
 * that leaves room for a loaded machine's heap, and is still a small part of the megabytes a
 * stream held before its backfill was paced.
 */
const MAX_BYTES_PER_STREAM = 384 * 1024;

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * Tool reports of about 2 KB each on the wire, as agents write them: 50 MB of backfill per
 * stream, far more than the kernel's buffers on loopback (about 4 MB a connection) hold.
 */
async function seed(path: string): Promise<void> {
  const log = new SqliteEventLog({ path, logger: silentLogger });
  for (let start = 0; start < EVENTS; start += 1000) {
    await log.logEvents(
      Array.from({ length: 1000 }, (_, i) => ({
        event_type: "tool.completed",
        source: `agent-${(start + i) % 17}`,
        task_id: `task-${Math.floor((start + i) / 10)}`,
        agent_id: `agent-${(start + i) % 17}`,
        data: { tool: "run_tests", call_id: `c${start + i}`, output: `${start + i} passed `.repeat(180) },
      })),
    );
  }
  log.close();
}

/** A masked, empty pong frame, as a client sends it. */
const PONG = Buffer.from([0x8a, 0x80, 0, 0, 0, 0]);

/**
 * A client that completes the websocket handshake, then stops reading from its socket. It
 * sends a pong now and then, unasked, so the server's pings never drop it: the worst case.
 */
async function stalledStream(port: number, path: string): Promise<Socket> {
  const socket = connectTcp(port, "127.0.0.1");
  socket.write(
    [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`,
      "Sec-WebSocket-Version: 13",
      `Authorization: Bearer ${BENCH_KEY}`,
      "",
      "",
    ].join("\r\n"),
  );
  await new Promise<void>((resolve, reject) => {
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      socket.off("data", onData);
      socket.pause(); // from here on the kernel's buffers fill, then the server's
      const keepAlive = setInterval(() => socket.write(PONG), 5000);
      socket.once("close", () => clearInterval(keepAlive));
      if (head.startsWith("HTTP/1.1 101")) resolve();
      else reject(new Error(`handshake refused: ${head.split("\r\n")[0]}`));
    };
    socket.on("data", onData);
    socket.once("error", reject);
  });
  return socket;
}

describe("streams that never read", () => {
  it(
    `cost the server less than ${MAX_BYTES_PER_STREAM / 1024} KiB each while they backfill ${EVENTS} events, and memory stays flat while they sit`,
    { timeout: 180_000 },
    async () => {
      const path = tempDbPath();
      await seed(path);
      // One credential opens them all: its own socket cap is lifted for the measurement.
      const server = await startProduct("stream-memory", {
        SWARM_DB: path,
        SWARM_MAX_SOCKETS_PER_CLIENT: String(STALLED_STREAMS + 10),
      });
      cleanups.push(() => server.close());
      const { port } = new URL(server.url);
      const read = async (name: string) => (await readMetrics(server.url))(name);

      // A reader that keeps up gets the whole log, in order; it also warms the server's caches.
      const reader = new WebSocket(`ws://127.0.0.1:${port}/api/stream?after_seq=0`, {
        headers: { authorization: `Bearer ${BENCH_KEY}` },
      });
      let received = 0;
      let inOrder = true;
      reader.on("message", (data: Buffer) => {
        const { event } = JSON.parse(data.toString()) as { event: { seq: number } };
        received += 1;
        if (event.seq !== received) inOrder = false;
      });
      await eventually(
        () => received,
        (count) => count === EVENTS,
        60_000,
      );
      expect(inOrder).toBe(true);
      reader.close();
      await eventually(
        () => read("swarm_open_websockets"),
        (open) => open === 0,
      );

      // What the server holds is its live memory: the heap in use plus the buffers outside it
      // (a socket's unsent frames). Resident memory alone is a high-water mark: a collection that
      // comes late under a loaded machine leaves it high whatever the streams hold (it read 393
      // KiB a stream once, against 140-190 in the same setup before and after). The least of
      // a few samples is what survives collection.
      const live = async () =>
        (await read("nodejs_heap_size_used_bytes")) + (await read("nodejs_external_memory_bytes"));
      const leastLive = async (count: number) => {
        let least = Number.POSITIVE_INFINITY;
        for (let i = 0; i < count; i += 1) {
          if (i > 0) await new Promise((resolve) => setTimeout(resolve, 1000));
          least = Math.min(least, await live());
        }
        return least;
      };
      const liveBefore = await leastLive(3);
      const rssBefore = await read("process_resident_memory_bytes");
      const stalled: Socket[] = [];
      cleanups.push(() => stalled.forEach((socket) => socket.destroy()));
      for (let opened = 0; opened < STALLED_STREAMS; opened += 25) {
        stalled.push(
          ...(await Promise.all(
            Array.from({ length: 25 }, () => stalledStream(Number(port), "/api/stream?after_seq=0")),
          )),
        );
      }
      await eventually(
        () => read("swarm_open_websockets"),
        (open) => open === STALLED_STREAMS,
      );
      // While they sit there: sampled once a second for ten seconds, all still open.
      const samples: number[] = [];
      const liveSamples: number[] = [];
      for (let i = 0; i < 10; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        samples.push(await read("process_resident_memory_bytes"));
        liveSamples.push(await live());
      }
      const perStream = (Math.min(...liveSamples) - liveBefore) / STALLED_STREAMS;
      const rssPerStream = (Math.max(...samples) - rssBefore) / STALLED_STREAMS;
      const lateRise = (samples.at(-1) ?? 0) - (samples[4] ?? 0);
      console.log(
        `stream-memory: RSS ${(rssBefore / 2 ** 20).toFixed(1)} MiB before, ` +
          `samples ${samples.map((s) => (s / 2 ** 20).toFixed(1)).join(", ")} MiB; ` +
          `${(perStream / 1024).toFixed(1)} KiB live per stalled stream ` +
          `(${(rssPerStream / 1024).toFixed(1)} KiB of resident memory); ` +
          `${(lateRise / 2 ** 20).toFixed(1)} MiB over the last five seconds`,
      );
      expect(perStream).toBeLessThan(MAX_BYTES_PER_STREAM);
      // Flat: what rose in the last five seconds is a small part of what the streams cost.
      expect(lateRise).toBeLessThan(8 * 2 ** 20);
      // Still held open, not dropped as slow: a client that reads again later carries on.
      expect(await read("swarm_open_websockets")).toBe(STALLED_STREAMS);

      // The server still serves everyone else.
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      for (const socket of stalled) socket.destroy();
      await eventually(
        () => read("swarm_open_websockets"),
        (open) => open === 0,
      );
    },
  );
});
