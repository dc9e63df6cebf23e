import { describe, expect, it } from "vitest";
import { newId, shortId } from "../../src/ids.js";
import { buildTestApp, OPERATOR_KEY, type EngineName, type TestApp } from "../helpers/app.js";
import { ENGINES } from "../helpers/engines.js";

const HTML = { accept: "text/html" };
const XSS = `<script>alert("x")</script>"><img src=x onerror=alert(1)>`;

/** The CSRF cookie and a token for it, as a browser gets them from any page with a form. */
async function formCredentials(app: TestApp<EngineName>["app"], cookie = "") {
  const page = await app.inject({ url: "/tasks", headers: { ...HTML, cookie } });
  const token = /name="_csrf" value="([^"]+)"/.exec(page.body)?.[1];
  const csrfCookie = page.cookies.find((c) => c.name === "_csrf");
  if (token === undefined || csrfCookie === undefined) throw new Error("no CSRF token on the page");
  return { token, cookie: [cookie, `_csrf=${csrfCookie.value}`].filter(Boolean).join("; ") };
}

/** The login form's CSRF token and the cookie it goes with. */
async function loginFormCredentials(
  app: TestApp<EngineName>["app"],
  headers: Record<string, string> = {},
  remoteAddress?: string,
) {
  const login = await app.inject({ url: "/login", headers: { ...HTML, ...headers }, remoteAddress });
  const token = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
  return { token, csrfCookie: `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value}` };
}

function form(fields: Record<string, string>) {
  return new URLSearchParams(fields).toString();
}

const FORM = { "content-type": "application/x-www-form-urlencoded" };

type BuildOptions = Omit<NonNullable<Parameters<typeof buildTestApp<EngineName>>[0]>, "engine">;

/** Builds test apps on `engine`. */
const builder =
  (engine: EngineName) =>
  (options: BuildOptions = {}) =>
    buildTestApp<EngineName>({ ...options, engine });

describe.each(ENGINES)("dashboard pages on $name", ({ name: engine }) => {
  const build = builder(engine);

  it("render every page with its components' ids, and the empty states say what to do", async () => {
    const t = await build({ apiKey: undefined });
    const expectations: [string, string[], string[]][] = [
      [
        "/",
        ['id="counters"', 'id="feed"', 'id="auctions"', 'id="agent-list"', 'id="charts"', 'id="post-task"'],
        ["npm run demo", "swarm-agent", "Post a task"],
      ],
      [
        "/tasks",
        ['id="task-list"', 'id="task-rows"', 'id="post-task"'],
        [
          "No tasks yet",
          'name="auction_seconds" type="number" min="0.1" max="600" step="0.1" value="" placeholder="5"',
        ],
      ],
      ["/agents", ['id="agent-table"', 'id="agent-rows"'], ["No agent has registered"]],
      ["/events", ['id="event-rows"', 'id="event-counts"'], ["The log is empty"]],
    ];
    for (const [url, ids, texts] of expectations) {
      const response = await t.app.inject({ url, headers: HTML });
      expect(response.statusCode, url).toBe(200);
      expect(response.headers["content-type"]).toMatch(/^text\/html/);
      for (const id of ids) expect(response.body, `${url} ${id}`).toContain(id);
      for (const text of texts) expect(response.body, `${url} ${text}`).toContain(text);
    }
  });

  it("show a task with its bids, winner, tool calls and result, and an agent with its stats", async () => {
    const t = await build({ apiKey: undefined, rules: { closeWhenAllBid: true } });
    const cheap = await t.agent("cheap", { capabilities: ["summarize"] });
    const dear = await t.agent("dear", { capabilities: ["summarize"] });
    const taskId = await t.task({ required_capabilities: ["summarize"] });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/bids`,
      headers: dear.auth,
      payload: { bid_sats: 200 },
    });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/bids`,
      headers: cheap.auth,
      payload: { bid_sats: 80 },
    });
    await t.app.inject({ method: "POST", url: `/api/tasks/${taskId}/start`, headers: cheap.auth });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/tools`,
      headers: cheap.auth,
      payload: { tool: "web.search", phase: "called", call_id: "c1" },
    });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/complete`,
      headers: cheap.auth,
      payload: { result: "the summary" },
    });

    const task = await t.app.inject({ url: `/tasks/${taskId}`, headers: HTML });
    expect(task.statusCode).toBe(200);
    for (const id of [`id="task-${taskId}"`, 'id="bids"', 'id="tool-calls"', 'id="timeline"'])
      expect(task.body).toContain(id);
    expect(task.body).toMatch(
      /★ winner<\/span>\s*<a href="\/agents\/[^"]+" class="agent-link" title="[^"]+">cheap<\/a>/,
    );
    expect(task.body).toContain("web.search");
    expect(task.body).toContain("the summary");
    expect(task.body).toContain('data-status="completed"');
    for (const type of [
      "task.created",
      "bid.submitted",
      "task.assigned",
      "task.started",
      "tool.called",
      "task.completed",
    ]) {
      expect(task.body).toContain(`>${type}<`);
    }

    const agent = await t.app.inject({ url: `/agents/${cheap.id}`, headers: HTML });
    expect(agent.statusCode).toBe(200);
    expect(agent.body).toContain(`id="agent-${cheap.id}"`);
    expect(agent.body).toMatch(/<dt>Wins<\/dt><dd>1 \(100%\)<\/dd>/);
    expect(agent.body).toMatch(/<dt>Earned<\/dt><dd><span class="sats">80&nbsp;sats<\/span><\/dd>/);
    expect(agent.body).toContain(`id="task-${taskId}"`);

    const overview = await t.app.inject({ url: "/", headers: HTML });
    expect(overview.body).toMatch(/<span class="value">1<\/span><span class="label">tasks completed/);
    expect(overview.body).toMatch(/<span class="value">2<\/span><span class="label">agents online/);
  });

  it("list the first 15 agents on the overview, busy first, with a link to the rest", async () => {
    const t = await build({ apiKey: undefined });
    for (let i = 0; i < 17; i++) await t.agent(`worker-${String(i).padStart(2, "0")}`);
    const busy = await t.agent("zz-busy");
    const taskId = await t.task();
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/bids`,
      headers: busy.auth,
      payload: { bid_sats: 3 },
    });
    t.clock.advance(6000);
    await t.tick();
    const page = await t.app.inject({ url: "/", headers: HTML });
    const listed = [
      ...page.body.matchAll(/<li id="agent-[^"]+">[\s\S]*?class="agent-link" title="[^"]+">([^<]+)</g),
    ].map((m) => m[1]);
    expect(listed).toHaveLength(15);
    expect(listed[0]).toBe("zz-busy");
    expect(page.body).toContain('<a href="/agents">3 more</a>');
  });

  it("answer unknown pages and records with an HTML 404, and the API with its JSON error", async () => {
    const t = await build({ apiKey: undefined });
    const page = await t.app.inject({ url: "/no/such/page", headers: HTML });
    expect(page.statusCode).toBe(404);
    expect(page.headers["content-type"]).toMatch(/^text\/html/);
    expect(page.body).toContain("There is no page at /no/such/page");
    const task = await t.app.inject({ url: "/tasks/nope", headers: HTML });
    expect(task.statusCode).toBe(404);
    expect(task.body).toContain("There is no task nope.");
    const api = await t.app.inject({ url: "/api/nope", headers: HTML });
    expect(api.statusCode).toBe(404);
    expect(api.json().error.code).toBe("NOT_FOUND");
  });

  it("serve htmx and its websocket extension from the installed packages, and no inline script or style", async () => {
    const t = await build({ apiKey: undefined });
    const htmx = await t.app.inject({ url: "/vendor/htmx.min.js" });
    expect(htmx.statusCode).toBe(200);
    expect(htmx.body).toContain("2.0.11");
    expect((await t.app.inject({ url: "/vendor/htmx-ext-ws.min.js" })).body).toContain("ws-connect");
    expect((await t.app.inject({ url: "/vendor/other.js" })).statusCode).toBe(404);
    for (const url of ["/", "/tasks", "/agents", "/events"]) {
      const page = await t.app.inject({ url, headers: HTML });
      const csp = String(page.headers["content-security-policy"]);
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain("unsafe-inline");
      expect(csp).toContain("form-action 'self'");
      expect(page.body).not.toMatch(/<script(?![^>]*\bsrc=)/);
      expect(page.body).not.toMatch(/\sstyle=/);
      expect(page.body).not.toMatch(/\son[a-z]+=/);
    }
  });

  it("send helmet's full set of security headers on every answer: pages, API, refusals and 404s", async () => {
    const t = await build();
    const answers = [
      await t.app.inject({ url: "/", headers: HTML }),
      await t.app.inject({ url: "/api/tasks", headers: { authorization: `Bearer ${OPERATOR_KEY}` } }),
      await t.app.inject({ url: "/api/tasks" }), // 401
      await t.app.inject({
        url: "/api/events?bogus=1",
        headers: { authorization: `Bearer ${OPERATOR_KEY}` },
      }), // 400
      await t.app.inject({ url: "/no/such/page" }),
    ];
    // The dashboard sends a browser without a session to the login form.
    expect(answers.map((answer) => answer.statusCode)).toEqual([303, 200, 401, 400, 404]);
    for (const answer of answers) {
      expect(answer.headers).toMatchObject({
        "x-content-type-options": "nosniff",
        "x-frame-options": "SAMEORIGIN",
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-resource-policy": "same-origin",
        "strict-transport-security": expect.stringContaining("max-age=") as unknown,
        "content-security-policy": expect.stringContaining("frame-ancestors 'none'") as unknown,
      });
      expect(answer.headers["x-powered-by"]).toBeUndefined();
    }
  });

  it("ask browsers to upgrade insecure requests only when the page came over TLS", async () => {
    const csp = async (app: TestApp<EngineName>["app"], url: string, https: boolean) => {
      const answer = await app.inject({
        url,
        headers: { ...HTML, ...(https ? { "x-forwarded-proto": "https" } : {}) },
      });
      return String(answer.headers["content-security-policy"]);
    };
    const behindProxy = await build({ apiKey: undefined, trustProxy: ["127.0.0.1"] });
    const direct = await build({ apiKey: undefined });
    for (const url of ["/", "/tasks", "/api/agents", "/docs/"]) {
      expect(await csp(behindProxy.app, url, false), url).not.toContain("upgrade-insecure-requests");
      // Said by a client rather than a trusted proxy, https changes nothing.
      expect(await csp(direct.app, url, true), url).not.toContain("upgrade-insecure-requests");
    }
    for (const url of ["/", "/tasks", "/api/agents"]) {
      const overTls = await csp(behindProxy.app, url, true);
      expect(overTls, url).toContain("upgrade-insecure-requests");
      expect(overTls, url).toContain("script-src 'self'");
      expect(overTls, url).toContain("frame-ancestors 'none'");
    }
  });

  it.each(["__proto__", "constructor", "toString", "hasOwnProperty"])(
    "answer /vendor/%s with 404: a name inherited by every object is no asset",
    async (name) => {
      const t = await build({ apiKey: undefined });
      const asset = await t.app.inject({ url: `/vendor/${name}` });
      expect(asset.statusCode).toBe(404);
      expect(asset.body).toContain(`no asset ${name}`);
    },
  );

  it("escape agent, task and event text everywhere it is shown", async () => {
    const t = await build({ apiKey: undefined });
    const agent = await t.agent(XSS, { capabilities: ["summarize"] });
    const taskId = await t.task({ description: XSS });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/bids`,
      headers: agent.auth,
      payload: { bid_sats: 5 },
    });
    await t.eventLog.logEvent({
      event_type: "deploy.finished",
      source: "ci-<b>bot</b>",
      data: { message: XSS },
    });
    await t.tick();
    await t.app.inject({ method: "POST", url: `/api/tasks/${taskId}/start`, headers: agent.auth });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/tools`,
      headers: agent.auth,
      payload: { tool: XSS, phase: "failed", error: XSS },
    });
    await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/fail`,
      headers: agent.auth,
      payload: { reason: XSS },
    });
    const pages = [
      "/",
      "/tasks",
      `/tasks/${taskId}`,
      "/agents",
      `/agents/${agent.id}`,
      "/events",
      `/events?q=${encodeURIComponent("alert")}`,
    ];
    for (const url of pages) {
      const page = await t.app.inject({ url, headers: HTML });
      expect(page.statusCode, url).toBe(200);
      expect(page.body, url).not.toContain("<script>alert");
      expect(page.body, url).not.toContain("<img src=x");
      expect(page.body, url).not.toContain("<b>bot");
      expect(page.body, url).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
    }
  });
});

describe.each(ENGINES)("ids on the dashboard on $name", ({ name: engine }) => {
  const build = builder(engine);

  /** The text and title of every task or agent link in `html`. */
  const links = (html: string, kind: "task" | "agent") =>
    [...html.matchAll(new RegExp(`class="${kind}-link" title="([^"]+)">([^<]*)<`, "g"))].map((m) => ({
      id: m[1] ?? "",
      text: m[2] ?? "",
    }));

  it("name tasks by description and agents by name in event rows, with the full id on hover", async () => {
    const t = await build({ apiKey: undefined });
    const agent = await t.agent("researcher");
    const tasks = [];
    for (let i = 0; i < 5; i += 1) tasks.push(await t.task({ description: `Summarise report number ${i}` }));
    const overview = await t.app.inject({ url: "/", headers: HTML });
    const feed = /<ol id="feed"[\s\S]*?<\/ol>/.exec(overview.body)?.[0] ?? "";
    const taskLinks = links(feed, "task");
    // task.created rows say the description already; task.bidding rows name the task by it.
    expect(taskLinks.filter((link) => link.text.startsWith("Summarise report number"))).toHaveLength(5);
    expect(new Set(taskLinks.map((link) => link.id))).toEqual(new Set(tasks));
    expect(links(feed, "agent")).toContainEqual({ id: agent.id, text: "researcher" });
    const taskPage = await t.app.inject({ url: `/tasks/${tasks[0]}`, headers: HTML });
    expect(taskPage.body).toMatch(/class="crumbs">.*title="[^"]+">Summarise report number 0</);
    const agentPage = await t.app.inject({ url: `/agents/${agent.id}`, headers: HTML });
    expect(agentPage.body).toContain(
      `class="crumbs"><a href="/agents">Agents</a> / <span title="${agent.id}">researcher</span>`,
    );
  });

  it("tell apart tasks that share a description by the short id beside it, on lists and in the feed", async () => {
    const t = await build({ apiKey: undefined });
    const tasks = [];
    for (let i = 0; i < 5; i += 1) tasks.push(await t.task({ description: "Refactor the CSV exporter" }));
    for (const url of ["/tasks", "/"]) {
      const page = await t.app.inject({ url, headers: HTML });
      const shown = [
        ...page.body.matchAll(
          /class="task-link" title="([^"]+)">Refactor the CSV exporter<span class="short-id"> ([^<]+)<\/span>/g,
        ),
      ].map((m) => ({ id: m[1] ?? "", short: m[2] ?? "" }));
      expect(new Set(shown.map((link) => link.id)), url).toEqual(new Set(tasks));
      for (const link of shown) expect(link.short, url).toBe(shortId(link.id));
      expect(new Set(shown.map((link) => link.short)).size, url).toBe(5);
    }
  });

  it("tell apart ids made in one burst where there is no name: 50 rows, 50 short forms", async () => {
    const t = await build({ apiKey: undefined });
    const ids = Array.from({ length: 50 }, () => newId());
    await t.eventLog.logEvents(
      ids.map((id) => ({ event_type: "deploy.finished", source: "ci", task_id: id, agent_id: id })),
    );
    const page = await t.app.inject({ url: "/events", headers: HTML });
    for (const kind of ["task", "agent"] as const) {
      const shown = links(page.body, kind);
      expect(shown, kind).toHaveLength(50);
      expect(new Set(shown.map((link) => link.text)).size, kind).toBe(50);
      for (const link of shown) expect(link.text, kind).toBe(shortId(link.id));
    }
  });
});

describe.each(ENGINES)("a task handed back on $name", ({ name: engine }) => {
  const build = builder(engine);

  it("reads as a hand-back, not a failure, in the feed and the timeline, and the task card counts it", async () => {
    const t = await build({ apiKey: undefined });
    const holder = await t.agent("holder");
    const taskId = await t.task();
    await t.bid(holder, taskId, 5);
    await t.app.inject({ method: "POST", url: `/api/tasks/${taskId}/start`, headers: holder.auth });
    const released = await t.app.inject({
      method: "POST",
      url: `/api/tasks/${taskId}/release`,
      headers: holder.auth,
      payload: { reason: `stopping ${XSS}` },
    });
    expect(released.statusCode).toBe(200);
    const escapedReason = "stopping &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;";
    const overview = await t.app.inject({ url: "/", headers: HTML });
    const feedRow =
      /<li id="ev-\d+" class="event family-task"[^>]*data-type="task\.released"[\s\S]*?<\/li>/.exec(
        overview.body,
      )?.[0];
    expect(feedRow).toContain(`handed back by holder: ${escapedReason}`);
    expect(feedRow).toContain("auctioned again");
    const page = await t.app.inject({ url: `/tasks/${taskId}`, headers: HTML });
    expect(page.body).toContain('data-type="task.released"');
    expect(page.body).toContain("auction round 2 open (handed back by its agent)");
    expect(page.body).toMatch(/<dt>Round<\/dt><dd>2 <span class="muted handed-back">\(1 handed back/);
    for (const body of [overview.body, page.body]) expect(body).not.toContain("<script>alert");
    // The stylesheet marks the row by shape and word, not with a failure's red.
    const css = await t.app.inject({ url: "/static/dashboard.css" });
    expect(css.body).toContain('li[data-type="task.released"] .what::before');
  });
});

describe.each(ENGINES)("dashboard query strings on $name", ({ name: engine }) => {
  const build = builder(engine);

  it("ignore parameters a page without filters does not take, however often they repeat", async () => {
    const t = await build({ apiKey: undefined });
    // Found by the property test: a repeated unknown parameter reached the task query as an array.
    for (const url of ["/agents?x=1&x=2", "/?q=1&q=2"]) {
      expect((await t.app.inject({ url, headers: HTML })).statusCode, url).toBe(200);
    }
    expect((await t.app.inject({ url: "/tasks?status=nonsense", headers: HTML })).statusCode).toBe(400);
  });

  it("refuse a parameter a filtered page does not take with a 400 page naming it, keeping htmx's own", async () => {
    const t = await build({ apiKey: undefined });
    for (const [url, key] of [
      ["/tasks?agent_id=a&agent_id=b&status=bidding", "agent_id"],
      ["/tasks?agent_id=&agent_id=", "agent_id"],
      ["/tasks?state=bidding", "state"],
      ["/events?event_typ=task.created", "event_typ"],
      ["/events?types=task.created&live=1", "types"],
      ["/events/export?format=csv&kind=task.created", "kind"],
    ] as const) {
      const page = await t.app.inject({ url, headers: HTML });
      expect(page.statusCode, url).toBe(400);
      expect(page.headers["content-type"], url).toContain("text/html");
      expect(page.body, url).toContain(`querystring.${key}: is not a query parameter`);
    }
    const busted = await t.app.inject({
      url: "/events?type=task.created&org.htmx.cache-buster=event-rows",
      headers: HTML,
    });
    expect(busted.statusCode).toBe(200);
  });
});

describe.each(ENGINES)("dashboard forms on $name", ({ name: engine }) => {
  const build = builder(engine);

  it("post a task from the form with a CSRF token, and refuse a form without one, writing nothing", async () => {
    const t = await build({ apiKey: undefined });
    const noToken = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: FORM,
      payload: form({ description: "x" }),
    });
    expect(noToken.statusCode).toBe(403);
    expect(noToken.body).toContain("This form has expired");
    const forged = await formCredentials(t.app);
    const wrongToken = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie: forged.cookie },
      payload: form({ _csrf: "forged", description: "x" }),
    });
    expect(wrongToken.statusCode).toBe(403);
    expect((await t.coordinator.store.listTasks({ limit: 10 })).tasks).toHaveLength(0);

    const { token, cookie } = await formCredentials(t.app);
    const posted = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie },
      payload: form({
        _csrf: token,
        description: "  label the images  ",
        required_capabilities: "vision, ocr,",
        auction_seconds: "2.5",
        max_bid_sats: "300",
      }),
    });
    expect(posted.statusCode).toBe(303);
    const [task] = (await t.coordinator.store.listTasks({ limit: 10 })).tasks;
    expect(posted.headers.location).toBe(`/tasks/${task?.id}`);
    expect(task).toMatchObject({
      description: "label the images",
      required_capabilities: ["vision", "ocr"],
      auction_ms: 2500,
      max_bid_sats: 300,
    });

    const htmx = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie, "hx-request": "true" },
      payload: form({ _csrf: token, description: "second" }),
    });
    expect(htmx.statusCode).toBe(201);
    expect(htmx.body).toMatch(/^\s*<form id="post-task"/);
    expect(htmx.body).toContain('Posted <a href="/tasks/');
  });

  it("take url-encoded forms while the same fields as text/plain are refused with 415", async () => {
    const t = await build({ apiKey: undefined });
    const { token, cookie } = await formCredentials(t.app);
    const asText = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { "content-type": "text/plain", cookie },
      payload: form({ _csrf: token, description: "sent as text" }),
    });
    expect(asText.statusCode).toBe(415);
    expect(asText.body).toContain("Content-Type text/plain is not accepted");
    expect((await t.coordinator.store.listTasks({ limit: 10 })).tasks).toHaveLength(0);
    const asForm = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie },
      payload: form({ _csrf: token, description: "sent as a form" }),
    });
    expect(asForm.statusCode).toBe(303);
    expect(
      (await t.coordinator.store.listTasks({ limit: 10 })).tasks.map((task) => task.description),
    ).toEqual(["sent as a form"]);
  });

  it("keeps what was typed and names each bad field, without creating a task", async () => {
    const t = await build({ apiKey: undefined });
    const { token, cookie } = await formCredentials(t.app);
    const cases: [Record<string, string>, string][] = [
      [{ description: "   " }, "Say what the task is."],
      [{ description: "ok", auction_seconds: "9999" }, "The auction window is 0.1 to 600 seconds."],
      [{ description: "ok", max_bid_sats: "1.5" }, "The max bid is a whole number of sats"],
      [{ description: "ok", required_capabilities: "no spaces allowed" }, "required_capabilities"],
    ];
    for (const [fields, message] of cases) {
      const response = await t.app.inject({
        method: "POST",
        url: "/tasks",
        headers: { ...FORM, cookie, "hx-request": "true" },
        payload: form({ _csrf: token, ...fields }),
      });
      expect(response.statusCode, message).toBe(422);
      expect(response.body).toContain(message);
      expect(response.body).toContain('aria-invalid="true"');
      if (fields.auction_seconds !== undefined) expect(response.body).toContain('value="9999"');
    }
    expect((await t.coordinator.store.listTasks({ limit: 10 })).tasks).toHaveLength(0);
  });

  it("cancels a task from its page", async () => {
    const t = await build({ apiKey: undefined });
    const taskId = await t.task();
    const { token, cookie } = await formCredentials(t.app);
    const response = await t.app.inject({
      method: "POST",
      url: `/tasks/${taskId}/cancel`,
      headers: { ...FORM, cookie },
      payload: form({ _csrf: token }),
    });
    expect(response.statusCode).toBe(303);
    expect((await t.coordinator.getTask(taskId))?.status).toBe("cancelled");
  });

  it("runs a cancelled task again from its page, and shows both links", async () => {
    const t = await build({ apiKey: undefined });
    const taskId = await t.task({ description: "nightly <report>" });
    const { token, cookie } = await formCredentials(t.app);
    const post = (url: string, fields: Record<string, string> = {}) =>
      t.app.inject({
        method: "POST",
        url,
        headers: { ...FORM, cookie },
        payload: form({ _csrf: token, ...fields }),
      });
    const page = async (id: string) => (await t.app.inject({ url: `/tasks/${id}`, headers: HTML })).body;
    expect(await page(taskId)).toContain(`action="/tasks/${taskId}/retry"`);
    await post(`/tasks/${taskId}/cancel`);
    const rerun = await post(`/tasks/${taskId}/retry`);
    expect(rerun.statusCode).toBe(303);
    const newId = rerun.headers.location!.split("/").pop()!;
    expect(newId).not.toBe(taskId);
    const copy = await t.coordinator.getTask(newId);
    expect(copy).toMatchObject({ description: "nightly <report>", retry_of: taskId });
    expect(await page(newId)).toContain(`href="/tasks/${taskId}" class="retry-of">${shortId(taskId)}`);
    const original = await page(taskId);
    expect(original).toContain("data-retried");
    expect(original).toContain(`href="/tasks/${newId}" class="retried-by"`);
    // Twice is refused, as a page that says why.
    const twice = await post(`/tasks/${taskId}/retry`);
    expect(twice.statusCode).toBe(409);
    expect(twice.body).toContain("already run again");
  });

  it("lists schedules, and pauses, resumes and deletes them from the page", async () => {
    const t = await build({ apiKey: undefined });
    const made = await t.app.inject({
      method: "POST",
      url: "/api/schedules",
      headers: t.operator,
      payload: { cron: "0 9 * * 1-5", timezone: "Europe/Paris", task: { description: "standup <notes>" } },
    });
    const id = made.json<{ schedule: { id: string } }>().schedule.id;
    const listed = (await t.app.inject({ url: "/schedules", headers: HTML })).body;
    expect(listed).toContain("standup &lt;notes&gt;");
    expect(listed).toContain("<code>0 9 * * 1-5</code>");
    expect(listed).toContain(`action="/schedules/${id}/pause"`);
    const { token, cookie } = await formCredentials(t.app);
    const act = (action: string) =>
      t.app.inject({
        method: "POST",
        url: `/schedules/${id}/${action}`,
        headers: { ...FORM, cookie },
        payload: form({ _csrf: token }),
      });
    expect((await act("pause")).statusCode).toBe(303);
    expect(await t.app.serverStore.getSchedule(id)).toMatchObject({ paused: true, next_fire_at: null });
    expect((await t.app.inject({ url: "/schedules", headers: HTML })).body).toContain(
      `action="/schedules/${id}/resume"`,
    );
    expect((await act("resume")).statusCode).toBe(303);
    expect(await t.app.serverStore.getSchedule(id)).toMatchObject({ paused: false });
    expect((await act("delete")).statusCode).toBe(303);
    expect(await t.app.serverStore.getSchedule(id)).toBeUndefined();
    expect((await t.app.inject({ url: "/schedules", headers: HTML })).body).toContain("No schedules yet");
  });

  it("marks an agent that heartbeats with its stream gone, on the list and its page", async () => {
    const t = await build({ apiKey: undefined });
    const zombie = await t.agent("zombie");
    await t.agent("fine");
    await t.coordinator.submit({ type: "StreamSeen", agent_id: zombie.id });
    await t.coordinator.submit({ type: "StreamClosed", agent_id: zombie.id });
    const list = (await t.app.inject({ url: "/agents", headers: HTML })).body;
    expect(list.match(/status-zombie/g)).toHaveLength(1);
    expect(list).toContain("no stream");
    const page = (await t.app.inject({ url: `/agents/${zombie.id}`, headers: HTML })).body;
    expect(page).toContain("status-zombie");
    expect(page).toContain("reliability 80%");
  });

  it("shows what a waiting task waits on, linked", async () => {
    const t = await build({ apiKey: undefined });
    const first = await t.task({ description: "gather" });
    const second = await t.task({ description: "summarize", depends_on: [first] });
    const page = (await t.app.inject({ url: `/tasks/${second}`, headers: HTML })).body;
    expect(page).toContain('data-status="waiting"');
    expect(page).toContain(
      `<a href="/tasks/${first}">${shortId(first)}</a> <span class="muted">(not completed yet)</span>`,
    );
    expect(page).toContain("until 1 dependency completes");
  });

  it("gives a task in its auction to an agent from its page, offering the agents that can take it", async () => {
    const t = await build({ apiKey: undefined });
    const coder = await t.agent("coder", { capabilities: ["code"] });
    await t.agent("writer", { capabilities: ["writing"] });
    const taskId = await t.task({ required_capabilities: ["code"] });
    const page = (await t.app.inject({ url: `/tasks/${taskId}`, headers: HTML })).body;
    expect(page).toContain(`<option value="${coder.id}">coder</option>`);
    expect(page).not.toContain(">writer</option>");
    const { token, cookie } = await formCredentials(t.app);
    const response = await t.app.inject({
      method: "POST",
      url: `/tasks/${taskId}/assign`,
      headers: { ...FORM, cookie },
      payload: form({ _csrf: token, agent_id: coder.id }),
    });
    expect(response.statusCode).toBe(303);
    expect(await t.coordinator.getTask(taskId)).toMatchObject({
      status: "assigned",
      assigned_agent: coder.id,
    });
  });
});

describe.each(ENGINES)("dashboard login on $name", ({ name: engine }) => {
  const build = builder(engine);

  it("with a key set, needs a login to view and act; a wrong key is refused", async () => {
    const t = await build();
    const anonymous = await t.app.inject({ url: "/tasks?status=bidding", headers: HTML });
    expect(anonymous.statusCode).toBe(303);
    expect(anonymous.headers.location).toBe("/login?next=%2Ftasks%3Fstatus%3Dbidding");

    const login = await t.app.inject({ url: "/login", headers: HTML });
    const token = /name="_csrf" value="([^"]+)"/.exec(login.body)?.[1] ?? "";
    const csrfCookie = `_csrf=${login.cookies.find((c) => c.name === "_csrf")?.value}`;
    const wrong = await t.app.inject({
      method: "POST",
      url: "/login",
      headers: { ...FORM, cookie: csrfCookie },
      payload: form({ _csrf: token, key: "not-the-key", next: "/tasks" }),
    });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.body).toContain("That is not the operator key.");
    expect(wrong.cookies.find((c) => c.name === "swarm_session")).toBeUndefined();

    const right = await t.app.inject({
      method: "POST",
      url: "/login",
      headers: { ...FORM, cookie: csrfCookie },
      payload: form({ _csrf: token, key: OPERATOR_KEY, next: "//evil.example/" }),
    });
    expect(right.statusCode).toBe(303);
    expect(right.headers.location).toBe("/");
    const session = right.cookies.find((c) => c.name === "swarm_session");
    expect(session).toMatchObject({ httpOnly: true, sameSite: "Strict" });
    const cookie = `swarm_session=${session?.value}`;
    expect((await t.app.inject({ url: "/", headers: { ...HTML, cookie } })).statusCode).toBe(200);
    const signed = session?.value ?? "";
    const tampered = `swarm_session=${signed.slice(0, -1)}${signed.endsWith("A") ? "B" : "A"}`;
    expect((await t.app.inject({ url: "/", headers: { ...HTML, cookie: tampered } })).statusCode).toBe(303);

    const credentials = await formCredentials(t.app, cookie);
    const posted = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie: credentials.cookie },
      payload: form({ _csrf: credentials.token, description: "logged in" }),
    });
    expect(posted.statusCode).toBe(303);
  });

  it("makes the session cookie a Secure __Host- cookie behind a trusted proxy that says https, and believes no one else", async () => {
    const sessionCookie = async (
      app: TestApp<EngineName>["app"],
      headers: Record<string, string>,
      remoteAddress = "127.0.0.1",
    ) => {
      const { token, csrfCookie } = await loginFormCredentials(app, headers, remoteAddress);
      const answer = await app.inject({
        method: "POST",
        url: "/login",
        headers: { ...FORM, ...headers, cookie: csrfCookie },
        payload: form({ _csrf: token, key: OPERATOR_KEY }),
        remoteAddress,
      });
      expect(answer.statusCode).toBe(303);
      return answer.cookies.find((c) => c.name.endsWith("swarm_session"));
    };
    const viaTls = { "x-forwarded-proto": "https" };

    const behindProxy = await build({ trustProxy: ["127.0.0.1"] });
    // Over TLS it is a __Host- cookie: the browser keeps it to this exact origin.
    expect(await sessionCookie(behindProxy.app, viaTls)).toMatchObject({
      name: "__Host-swarm_session",
      secure: true,
      path: "/",
    });
    expect((await sessionCookie(behindProxy.app, {}))?.secure).toBeFalsy();
    // A client that reaches the server directly, not through the proxy, cannot claim TLS.
    expect((await sessionCookie(behindProxy.app, viaTls, "203.0.113.7"))?.secure).toBeFalsy();

    const noProxy = await build();
    expect((await sessionCookie(noProxy.app, viaTls))?.secure).toBeFalsy();
  });

  it("with SWARM_DASHBOARD_PUBLIC, anyone may view but acting still needs the login", async () => {
    const t = await build({ dashboardPublic: true });
    const page = await t.app.inject({ url: "/tasks", headers: HTML });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain("Posting needs the operator key");
    const { token, cookie } = await formCredentials(t.app);
    const posted = await t.app.inject({
      method: "POST",
      url: "/tasks",
      headers: { ...FORM, cookie },
      payload: form({ _csrf: token, description: "not allowed" }),
    });
    expect(posted.statusCode).toBe(401);
    expect(posted.body).toContain("needs the operator key");
    expect((await t.coordinator.store.listTasks({ limit: 10 })).tasks).toHaveLength(0);
  });
});

describe.each(ENGINES)("login next on $name", ({ name: engine }) => {
  const build = builder(engine);

  const SITE = "http://swarm.example:3000";
  /** [what it is, `next`, where the login sends the browser]. */
  const NEXT_VALUES: [string, string, string][] = [
    ["a tab between the slashes", "/\t/evil.example", "/"],
    ["tabs and a path", "/\t\t/evil.example/steal", "/"],
    ["a newline between the slashes", "/\n/evil.example", "/"],
    ["CR LF that would add a header", "/\r\nSet-Cookie: stolen=1", "/"],
    ["a lone CR", "/tasks\r", "/"],
    ["U+2028", "/\u2028/evil.example", "/"],
    ["U+2029", "/tasks\u2029", "/"],
    ["NEL (U+0085)", "/\u0085/evil.example", "/"],
    ["a NUL", "/\u0000/evil.example", "/"],
    ["two slashes", "//evil.example/", "/"],
    ["a slash and a backslash", "/\\evil.example", "/"],
    ["two backslashes", "\\\\evil.example", "/"],
    ["slash, backslash, slash", "/\\/evil.example", "/"],
    ["a userinfo", "//user:pass@evil.example", "/"],
    ["an absolute URL", "https://evil.example/", "/"],
    ["javascript:", "javascript:alert(document.cookie)", "/"],
    ["javascript: after a space", " /javascript:alert(1)", "/"],
    ["a relative path", "tasks", "/"],
    ["an encoded tab stays a path", "/%09/evil.example", "/%09/evil.example"],
    ["encoded slashes stay a path", "/%2F%2Fevil.example", "/%2F%2Fevil.example"],
    ["an encoded backslash stays a path", "/%5Cevil.example", "/%5Cevil.example"],
    ["encoded slashes without the leading one", "%2F%2Fevil.example", "/"],
    ["dot segments stay on the site", "/../../evil.example", "/evil.example"],
    ["a javascript: path stays a path", "/javascript:alert(1)", "/javascript:alert(1)"],
    ["non-ASCII comes back encoded", "/tasks?q=café#ü", "/tasks?q=caf%C3%A9#%C3%BC"],
    ["very long", `/\t/${"a".repeat(1990)}`, "/"],
    [
      "a page with a query and a fragment",
      "/events?type=task.created&q=a%20b#feed",
      "/events?type=task.created&q=a%20b#feed",
    ],
    ["a task", "/tasks/0190a1b2", "/tasks/0190a1b2"],
  ];

  it("after logging in, every next sends the browser to a path on the site, or to /", async () => {
    const t = await build();
    const { token, csrfCookie } = await loginFormCredentials(t.app);
    for (const [what, next, expected] of NEXT_VALUES) {
      const answer = await t.app.inject({
        method: "POST",
        url: "/login",
        headers: { ...FORM, cookie: csrfCookie },
        payload: form({ _csrf: token, key: OPERATOR_KEY, next }),
      });
      expect(answer.statusCode, what).toBe(303);
      const location = String(answer.headers.location);
      expect(location, what).toBe(expected);
      // Resolved as a browser resolves it (WHATWG URL drops tabs and newlines, reads "\" as "/").
      expect(new URL(location, SITE).origin, what).toBe(SITE);
    }
  });

  it("the login form carries next on only as a path on the site, or as /", async () => {
    const t = await build();
    for (const [what, next, expected] of NEXT_VALUES) {
      const page = await t.app.inject({ url: `/login?next=${encodeURIComponent(next)}`, headers: HTML });
      expect(page.statusCode, what).toBe(200);
      const carried = /name="next" value="([^"]*)"/.exec(page.body)?.[1];
      expect(carried?.replaceAll("&amp;", "&"), what).toBe(expected);
    }
  });

  it("refuses a next longer than 2000 characters with 400, naming the field", async () => {
    const t = await build();
    const page = await t.app.inject({ url: `/login?next=/${"a".repeat(2000)}`, headers: HTML });
    expect(page.statusCode).toBe(400);
    expect(page.body).toContain("querystring.next");
  });
});

describe.each(ENGINES)("events page on $name", ({ name: engine }) => {
  const build = builder(engine);

  it("keeps the filter in the URL, pages older and newer by cursor, and exports the same filter", async () => {
    const t = await build({ apiKey: undefined });
    await t.eventLog.logEvents(
      Array.from({ length: 120 }, (_, i) => ({
        event_type: i % 2 === 0 ? "deploy.finished" : "deploy.started",
        source: "ci",
        data: { n: i, note: i % 3 === 0 ? "Needle" : "hay" },
      })),
    );
    const first = await t.app.inject({ url: "/events?type=deploy.finished&q=needle", headers: HTML });
    expect(first.statusCode).toBe(200);
    const seqs = (body: string) => [...body.matchAll(/<li id="ev-(\d+)"/g)].map((m) => Number(m[1]));
    const firstSeqs = seqs(first.body);
    // Even n and a multiple of 3: every sixth event, 20 of them, newest first.
    expect(firstSeqs).toHaveLength(20);
    expect(firstSeqs).toEqual([...firstSeqs].sort((a, b) => b - a));
    expect(first.body).toContain('value="needle"');
    expect(first.body).toContain('href="/events/export?type=deploy.finished&amp;q=needle&amp;format=csv"');
    expect(first.body).toContain('href="/events?type=deploy.finished&amp;q=needle&amp;live=1"');
    expect(first.body).not.toContain('rel="next"');

    const all = await t.app.inject({ url: "/events?source=ci", headers: HTML });
    const newest = seqs(all.body);
    expect(newest).toHaveLength(50);
    const older = /href="([^"]+)" rel="next"/.exec(all.body)?.[1]?.replace(/&amp;/g, "&") ?? "";
    expect(older).toBe(`/events?source=ci&before_seq=${newest.at(-1)}`);
    const page2 = await t.app.inject({ url: older, headers: HTML });
    const olderSeqs = seqs(page2.body);
    expect(olderSeqs[0]).toBe((newest.at(-1) ?? 0) - 1);
    const newer = /href="([^"]+)" rel="prev"/.exec(page2.body)?.[1]?.replace(/&amp;/g, "&") ?? "";
    expect(newer).toBe(`/events?source=ci&after_seq=${olderSeqs[0]}`);
    expect(seqs((await t.app.inject({ url: newer, headers: HTML })).body)).toEqual(newest);

    const exported = await t.app.inject({
      url: "/events/export?type=deploy.finished&q=needle&format=ndjson",
    });
    expect(exported.statusCode).toBe(200);
    const lines = exported.body
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines.map((e) => e.seq)).toEqual([...firstSeqs].reverse());
  });

  it("takes event_type as the Python-era name of type, keeping it in the form, the pager and the export", async () => {
    const t = await build({ apiKey: undefined });
    await t.eventLog.logEvents(
      Array.from({ length: 60 }, (_, i) => ({
        event_type: i % 2 === 0 ? "deploy.finished" : "deploy.started",
        source: "ci",
      })),
    );
    const page = await t.app.inject({ url: "/events?event_type=deploy.finished", headers: HTML });
    expect(page.statusCode).toBe(200);
    const types = [...page.body.matchAll(/<span class="type" title="([^"]+)"/g)].map((m) => m[1]);
    expect(types).toHaveLength(30);
    expect(new Set(types)).toEqual(new Set(["deploy.finished"]));
    expect(page.body).toContain('name="type" value="deploy.finished"');
    expect(page.body).toContain('href="/events/export?type=deploy.finished&amp;format=csv"');
    const both = await t.app.inject({
      url: "/events?type=deploy.started&event_type=deploy.finished",
      headers: HTML,
    });
    expect(both.statusCode).toBe(400);
    expect(both.body).toContain("querystring.event_type");
  });

  it("says what is wrong with a bad filter", async () => {
    const t = await build({ apiKey: undefined });
    const response = await t.app.inject({ url: "/events?since=yesterday", headers: HTML });
    expect(response.statusCode).toBe(400);
    expect(response.body).toMatch(/role="alert">[^<]*since/);
  });
});
