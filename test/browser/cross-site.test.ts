/**
 * The keyless default against other sites' pages, in a real Chromium: a page served from another
 * port on this machine cannot read the stream or the live dashboard, cannot cancel or post a task
 * with a "simple" request, and a name rebound to 127.0.0.1 (DNS rebinding, played here by a
 * host-resolver rule) is not answered at all.
 */
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haveBrowser, launchChromium } from "../helpers/browser.js";
import { startStack, type Stack } from "../helpers/stack.js";

const REBOUND_NAME = "rebound.attacker.test";
const SECRET_TASK = "rotate the production database password";

interface AttackResults {
  streamMessages?: number;
  streamClosed?: number;
  liveMessages?: number;
  liveClosed?: number;
  cancel?: string;
  post?: string;
}

/** The attacker's page: everything a page of another origin can try without credentials. */
function attackPage(base: string, taskId: string): string {
  const ws = base.replace("http", "ws");
  return `<!doctype html><title>attacker</title><script>
    const results = {};
    window.__results = results;
    const stream = new WebSocket(${JSON.stringify(`${ws}/api/stream?after_seq=0`)});
    stream.onmessage = () => { results.streamMessages = (results.streamMessages || 0) + 1; };
    stream.onclose = (e) => { results.streamClosed = e.code; };
    const live = new WebSocket(${JSON.stringify(`${ws}/live?view=overview`)});
    live.onmessage = () => { results.liveMessages = (results.liveMessages || 0) + 1; };
    live.onclose = (e) => { results.liveClosed = e.code; };
    fetch(${JSON.stringify(`${base}/api/tasks/${taskId}/cancel`)}, { method: "POST", mode: "no-cors" })
      .then(() => { results.cancel = "sent"; }, (e) => { results.cancel = "error " + e; });
    fetch(${JSON.stringify(`${base}/api/tasks`)}, {
      method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" },
      body: JSON.stringify({ description: "posted by another site" }),
    }).then(() => { results.post = "sent"; }, (e) => { results.post = "error " + e; });
  </script>`;
}

describe.skipIf(!haveBrowser)("the keyless default against other sites' pages, in Chromium", () => {
  let browser: Browser;
  let stack: Stack;
  let attacker: Server;
  const dataDir = mkdtempSync(join(tmpdir(), "swarm-cross-site-"));

  beforeAll(async () => {
    browser = await launchChromium([`--host-resolver-rules=MAP ${REBOUND_NAME} 127.0.0.1`]);
    stack = await startStack(join(dataDir, "swarm.db"));
  });
  afterAll(async () => {
    await browser?.close();
    attacker?.close();
    await stack?.stop().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function postTask(description: string): Promise<string> {
    const response = await fetch(`${stack.base}/api/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ description, auction_ms: 600_000 }),
    });
    expect(response.status).toBe(201);
    return ((await response.json()) as { task: { id: string } }).task.id;
  }

  it("a page on another port reads nothing and changes nothing", { timeout: 60_000 }, async () => {
    const taskId = await postTask(SECRET_TASK);
    attacker = createServer((_request, response) => {
      response.setHeader("content-type", "text/html");
      response.end(attackPage(stack.base, taskId));
    });
    await new Promise<void>((resolve) => attacker.listen(0, "127.0.0.1", resolve));
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`);
      await expect
        .poll(() => page.evaluate(() => (globalThis as { __results?: AttackResults }).__results), {
          timeout: 15_000,
        })
        .toMatchObject({ streamClosed: expect.any(Number), liveClosed: expect.any(Number) });
      await expect
        .poll(() => page.evaluate(() => (globalThis as { __results?: AttackResults }).__results))
        .toMatchObject({ cancel: expect.any(String), post: expect.any(String) });
      const seen = await page.evaluate(() => (globalThis as { __results?: AttackResults }).__results);
      expect(seen?.streamMessages).toBeUndefined();
      expect(seen?.liveMessages).toBeUndefined();

      const task = (await (await fetch(`${stack.base}/api/tasks/${taskId}`)).json()) as {
        task: { status: string };
      };
      expect(task.task.status).toBe("bidding");
      const { tasks } = (await (await fetch(`${stack.base}/api/tasks`)).json()) as {
        tasks: { description: string }[];
      };
      expect(tasks.map((t) => t.description)).not.toContain("posted by another site");
    } finally {
      await page.close();
    }
  });

  it(
    "a name rebound to 127.0.0.1 gets no page, no API answer and no socket",
    { timeout: 60_000 },
    async () => {
      await postTask(SECRET_TASK);
      const rebound = `http://${REBOUND_NAME}:${stack.port}`;
      const page = await browser.newPage();
      try {
        for (const path of ["/", "/api/events?after_seq=0", "/api/tasks"]) {
          const response = await page.goto(rebound + path);
          expect(response?.status(), path).toBe(421);
          expect(await page.content(), path).not.toContain(SECRET_TASK);
        }
        // Same-origin with the rebound name, so the Origin check alone would let it through.
        const closed = await page.evaluate(
          (url) =>
            new Promise<string>((resolve) => {
              // Runs in the page; the test's own types know no DOM.
              const { WebSocket: PageSocket } = globalThis as unknown as {
                WebSocket: new (url: string) => {
                  onmessage: () => void;
                  onclose: (event: { code: number }) => void;
                };
              };
              const socket = new PageSocket(url);
              socket.onmessage = () => resolve("message");
              socket.onclose = (event) => resolve(`closed ${event.code}`);
            }),
          `${rebound.replace("http", "ws")}/api/stream?after_seq=0`,
        );
        expect(closed).toMatch(/^closed/);
      } finally {
        await page.close();
      }
    },
  );
});
