/**
 * The dashboard in a real Chromium (Debian's package, driven by playwright-core; no browser is
 * downloaded). Screenshots land in test-results/screenshots/. On SQLite: what the browser
 * does with the pages; the pages and live pushes themselves are tested on both engines in
 * test/web/dashboard.test.ts and test/web/live.test.ts.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haveBrowser, launchChromium } from "../helpers/browser.js";
import { startStack, type Stack } from "../helpers/stack.js";

const SCREENSHOTS = join(import.meta.dirname, "../../test-results/screenshots");
/** A name, not an address, for the dashboard: Chromium resolves it to the loopback server. */
const HOST_NAME = "swarm.test";

async function api<T>(stack: Stack, path: string, body?: object, token?: string): Promise<T> {
  const response = await fetch(stack.base + path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

interface Registered {
  agent: { id: string; name: string };
  token: string;
}

async function shot(page: Page, name: string) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** `promise`, or a failure naming `what` once `ms` have passed. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

const XSS = `<img src=x onerror="window.__xss=1">"><script>window.__xss=2</script>`;

describe.skipIf(!haveBrowser)("dashboard in Chromium", () => {
  let browser: Browser;
  let stack: Stack;
  // One database for the whole file: the restart test reopens what the first test wrote.
  const dataDir = mkdtempSync(join(tmpdir(), "swarm-browser-"));
  const dbPath = join(dataDir, "swarm.db");

  beforeAll(async () => {
    browser = await launchChromium([`--host-resolver-rules=MAP ${HOST_NAME} 127.0.0.1`]);
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.stop().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it(
    "posts a task through the form and shows it, its bids and its assignment without a reload; XSS stays text",
    { timeout: 60_000 },
    async () => {
      stack = await startStack(dbPath);
      const cheap = await api<Registered>(stack, "/api/agents", {
        name: `cheap ${XSS}`,
        capabilities: ["summarize"],
      });
      const dear = await api<Registered>(stack, "/api/agents", { name: "dear", capabilities: ["summarize"] });
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      page.on("console", (message) => {
        if (message.type() === "error") errors.push(message.text());
      });
      await page.goto(stack.base + "/");
      await page.locator("#live-badge.live").waitFor();
      let reloads = 0;
      page.on("load", () => (reloads += 1));

      await page.fill("textarea[name=description]", `Summarise the outage ${XSS}`);
      await page.fill("input[name=required_capabilities]", "summarize");
      await page.fill("input[name=auction_seconds]", "30");
      await page.click("#post-task button[type=submit]");
      await page.locator("#post-task .notice").waitFor();
      const { tasks } = await api<{ tasks: { id: string }[] }>(stack, "/api/tasks");
      const taskId = tasks[0]?.id ?? "";
      await page.locator(`#auction-${taskId}`).waitFor();
      await expect.poll(() => page.locator("#feed").innerText()).toContain(`Summarise the outage ${XSS}`);

      await api(stack, `/api/tasks/${taskId}/bids`, { bid_sats: 300 }, dear.token);
      await page.locator(`#auction-${taskId} li.leading`, { hasText: "dear" }).waitFor();
      await shot(page, "overview-bidding");
      await api(stack, `/api/tasks/${taskId}/bids`, { bid_sats: 120 }, cheap.token);
      // Every eligible agent has bid, so the auction closes and the lowest bid wins.
      await expect
        .poll(() => page.locator("#feed").innerText())
        .toContain(`assigned to cheap ${XSS} for 120 sats`);
      await expect.poll(() => page.locator(`#auction-${taskId}`).count()).toBe(0);
      await expect.poll(() => page.locator("#counters").innerText()).toMatch(/1\s+busy/);
      await shot(page, "overview-assigned");

      expect(reloads).toBe(0);
      expect(await page.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
      expect(await page.locator("#feed img").count()).toBe(0);
      expect(errors).toEqual([]);

      await page.goto(`${stack.base}/tasks/${taskId}`);
      await page.locator("#live-badge.live").waitFor();
      await api(stack, `/api/tasks/${taskId}/start`, {}, cheap.token);
      await api(
        stack,
        `/api/tasks/${taskId}/tools`,
        { tool: "web.search", phase: "called", call_id: "c1" },
        cheap.token,
      );
      await api(stack, `/api/tasks/${taskId}/complete`, { result: `done ${XSS}` }, cheap.token);
      await page.locator(`#task-${taskId}[data-status="completed"]`).waitFor();
      await expect.poll(() => page.locator("#timeline").innerText()).toContain("task.completed");
      expect(await page.locator("#tool-calls").innerText()).toContain("web.search");
      expect(await page.locator(".cancel-task").isVisible()).toBe(false);
      // Completed: neither run again nor assign applies.
      expect(await page.locator(".retry-task").isVisible()).toBe(false);
      expect(await page.locator(".assign-task").isVisible()).toBe(false);
      expect(await page.locator(`#task-${taskId} .result`).innerText()).toBe(`done ${XSS}`);
      expect(await page.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
      await shot(page, "task-completed");

      // In its auction, the task offers assignment and not a re-run; once cancelled, the other
      // way round, live, as the card changes.
      const open = (await api<{ task: { id: string } }>(stack, "/api/tasks", { description: "open one" }))
        .task.id;
      await page.goto(`${stack.base}/tasks/${open}`);
      await page.locator("#live-badge.live").waitFor();
      expect(await page.locator(".assign-task").isVisible()).toBe(true);
      expect(await page.locator(".retry-task").isVisible()).toBe(false);
      await api(stack, `/api/tasks/${open}/cancel`, {});
      await page.locator(`#task-${open}[data-status="cancelled"]`).waitFor();
      await expect.poll(() => page.locator(".retry-task").isVisible()).toBe(true);
      expect(await page.locator(".assign-task").isVisible()).toBe(false);
      await page.close();
    },
  );

  it(
    "says it is stale while the server is away, then reconnects after a restart and shows the events it missed, each once",
    { timeout: 90_000 },
    async () => {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(stack.base + "/");
      await page.locator("#live-badge.live").waitFor();
      const rowsBefore = await page.locator("#feed > li[data-seq]").count();
      const seqBefore = Number(await page.locator("#live-seq").getAttribute("data-seq"));

      const { port, eventLog } = stack;
      // Each step bounded on its own, so a slow one is named rather than the whole test timing out.
      await within(20_000, "the server's shutdown", stack.app.close());
      await page.locator("#live-badge.reconnecting").waitFor({ timeout: 10_000 });
      // While the page is away, the log moves on.
      await eventLog.logEvents(
        [1, 2, 3].map((n) => ({
          event_type: "system.info",
          source: "ops",
          data: { message: `missed-${n}` },
        })),
      );
      // Away for more than a few seconds, the page says plainly that what it shows is old.
      await page.locator("#live-badge.stale").waitFor({ timeout: 15_000 });
      expect(await page.locator("#live-badge").innerText()).toMatch(
        /stale: not updated since .+; reconnecting/,
      );
      stack.coordinator.stop();
      eventLog.close();
      stack = await within(20_000, "the restart", startStack(dbPath, port));

      await page.locator("#live-badge.live").waitFor({ timeout: 20_000 });
      await expect.poll(() => page.locator("#feed").innerText()).toContain("missed-3");
      const feed = await page.locator("#feed").innerText();
      for (const n of [1, 2, 3]) expect(feed.split(`missed-${n}`).length - 1).toBe(1);
      const ids = await page.locator("#feed > li[data-seq]").evaluateAll((rows) => rows.map((row) => row.id));
      expect(new Set(ids).size).toBe(ids.length);
      // Besides the three, the restart itself wrote events (agents set offline until they return).
      const missed = stack.eventLog.latestSeq() - seqBefore;
      expect(missed).toBeGreaterThanOrEqual(3);
      expect(ids.length).toBe(Math.min(50, rowsBefore + missed));
      await shot(page, "overview-after-restart");
      await page.close();
    },
  );

  it("every page renders, fits a phone's width, and has no errors", { timeout: 60_000 }, async () => {
    const { agents } = await api<{ agents: { id: string }[] }>(stack, "/api/agents");
    const pages: [string, string][] = [
      ["tasks", "/tasks"],
      ["agents", "/agents"],
      ["agent", `/agents/${agents[0]?.id}`],
      ["events", "/events?type=task.assigned,bid.submitted&live=1"],
      ["not-found", "/no/such/page"],
    ];
    for (const [width, suffix] of [
      [1280, ""],
      [390, "-phone"],
    ] as const) {
      const page = await browser.newPage({ viewport: { width, height: 844 } });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      for (const [name, url] of [["overview", "/"], ...pages] as [string, string][]) {
        await page.goto(stack.base + url);
        if (name !== "not-found") await page.locator("#live-badge.live").waitFor();
        const overflow = await page.evaluate(() => {
          // Runs in the page; the test's own types know no DOM.
          const page = globalThis as unknown as {
            document: { documentElement: { scrollWidth: number } };
            innerWidth: number;
          };
          return page.document.documentElement.scrollWidth - page.innerWidth;
        });
        expect(overflow, `${name} at ${width}px`).toBeLessThanOrEqual(1);
        await shot(page, `${name}${suffix}`);
      }
      expect(errors).toEqual([]);
      await page.close();
    }
  });

  it(
    "over plain HTTP on a host name, loads its stylesheet and htmx and goes live",
    { timeout: 60_000 },
    async () => {
      const named = await startStack(join(dataDir, "named.db"), 0, { app: { allowedHosts: [HOST_NAME] } });
      const page = await browser.newPage();
      try {
        const failed: string[] = [];
        page.on("requestfailed", (request) => failed.push(request.url()));
        await page.goto(`http://${HOST_NAME}:${named.port}/`, { waitUntil: "load" });
        // Runs in the page; the test's own types know no DOM.
        const loaded = await page.evaluate(() => {
          const w = globalThis as unknown as {
            htmx?: unknown;
            document: { styleSheets: Iterable<{ href: string | null; cssRules: { length: number } }> };
          };
          // A sheet fetched from another origin (https, say) does not let the page read its rules.
          const readable = (sheet: { cssRules: { length: number } }) => {
            try {
              return sheet.cssRules.length > 0;
            } catch {
              return false;
            }
          };
          return {
            htmx: typeof w.htmx,
            stylesheets: [...w.document.styleSheets].filter(readable).map((sheet) => sheet.href),
          };
        });
        expect(loaded).toEqual({
          htmx: "object",
          stylesheets: [`http://${HOST_NAME}:${named.port}/static/dashboard.css`],
        });
        await page.locator("#live-badge.live").waitFor();
        expect(failed).toEqual([]);
      } finally {
        await page.close();
        await named.stop();
      }
    },
  );

  it(
    "holds CSRF and CSP in the browser: a logged-in operator's forged form post and injected scripts do nothing",
    { timeout: 60_000 },
    async () => {
      const key = "browser-operator-key-0123456789";
      const secure = await startStack(join(dataDir, "secure.db"), 0, { apiKey: key });
      // The attacker's page: another origin on this machine (same site, so the session cookie
      // goes along; only the CSRF token stands in the way).
      const attacker = createServer((_request, response) => {
        response.setHeader("content-type", "text/html");
        response.end(
          `<form id="forged" method="POST" action="${secure.base}/tasks">` +
            `<input name="description" value="forged by another site"><button>go</button></form>` +
            `<script>const ws = new WebSocket("${secure.base.replace("http", "ws")}/live?view=overview");` +
            `ws.onmessage = () => { window.__leaked = true; }; ws.onclose = (e) => { window.__closed = e.code; };</script>`,
        );
      });
      await new Promise<void>((resolve) => attacker.listen(0, "127.0.0.1", resolve));
      const attackerUrl = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`;
      const page = await browser.newPage();
      try {
        await page.goto(`${secure.base}/login`);
        await page.fill("input[name=key]", key);
        await page.click("form.login button[type=submit]");
        await page.locator("#live-badge.live").waitFor();

        // CSP: an inline script and an inline handler put into the page are refused, and say so.
        const outcome = await page.evaluate(async () => {
          // Runs in the page; the test's own types know no DOM.
          const w = globalThis as unknown as {
            document: {
              createElement(tag: string): { textContent: string; innerHTML: string };
              body: { appendChild(node: unknown): void };
              addEventListener(type: string, listener: (event: { violatedDirective: string }) => void): void;
            };
            __inline?: number;
          };
          const violations: string[] = [];
          w.document.addEventListener("securitypolicyviolation", (e) => violations.push(e.violatedDirective));
          const script = w.document.createElement("script");
          script.textContent = "window.__inline = 1";
          w.document.body.appendChild(script);
          const holder = w.document.createElement("div");
          holder.innerHTML = '<img src="data:," onerror="window.__inline = 2">';
          w.document.body.appendChild(holder);
          await new Promise((resolve) => setTimeout(resolve, 300));
          return { ran: w.__inline, violations };
        });
        expect(outcome.ran).toBeUndefined();
        expect(outcome.violations.some((d) => d.startsWith("script-src"))).toBe(true);

        // CSRF: the forged form reaches the server with the session cookie and is refused.
        await page.goto(attackerUrl);
        await expect
          .poll(() => page.evaluate(() => (globalThis as { __closed?: number }).__closed))
          .toBeDefined();
        expect(await page.evaluate(() => (globalThis as { __leaked?: boolean }).__leaked)).toBeUndefined();
        const [answer] = await Promise.all([
          page.waitForResponse(`${secure.base}/tasks`),
          page.click("#forged button"),
        ]);
        expect(answer.status()).toBe(403);
        const { tasks } = await api<{ tasks: unknown[] }>(secure, "/api/tasks", undefined, key);
        expect(tasks).toEqual([]);
      } finally {
        await page.close();
        attacker.close();
        await secure.stop();
      }
    },
  );
  it(
    "keeps a live task page's timeline to its newest 100 rows, and its older link leads to those before them",
    { timeout: 60_000 },
    async () => {
      const busy = await startStack(join(dataDir, "busy.db"));
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      try {
        const { task } = await api<{ task: { id: string } }>(busy, "/api/tasks", {
          description: "a long job",
        });
        await page.goto(`${busy.base}/tasks/${task.id}`);
        await page.locator("#live-badge.live").waitFor();
        expect(await page.locator('#timeline-pager a[rel="prev"]').isHidden()).toBe(true);
        await busy.eventLog.logEvents(
          Array.from({ length: 150 }, (_, i) => ({
            event_type: "tool.called",
            source: "worker",
            task_id: task.id,
            data: { tool: `step-${i}` },
          })),
        );
        const all = busy.eventLog.getTaskEvents(task.id).map((event) => event.seq);
        await expect
          .poll(() => page.locator("#timeline > li[data-seq]").last().getAttribute("data-seq"))
          .toBe(String(all.at(-1)));
        const shown = await page
          .locator("#timeline > li[data-seq]")
          .evaluateAll((rows) => rows.map((row) => Number(row.getAttribute("data-seq"))));
        expect(shown).toEqual(all.slice(-100));
        const older = page.locator('#timeline-pager a[rel="prev"]');
        expect(await older.isVisible()).toBe(true);
        await older.click();
        await page.waitForURL(/before_seq=/);
        const before = await page
          .locator("#timeline > li[data-seq]")
          .evaluateAll((rows) => rows.map((row) => Number(row.getAttribute("data-seq"))));
        expect(before).toEqual(all.slice(0, -100));
        await shot(page, "task-timeline-older");
      } finally {
        await page.close();
        await busy.stop();
      }
    },
  );
});
