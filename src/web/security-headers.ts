/**
 * The security headers every answer carries, from helmet, worked out once at start.
 *
 * @fastify/helmet builds helmet's middleware anew on every request and runs it against the raw
 * response: about 3 % of the server's CPU under the bid load, for headers that never change
 * here (the policy has no nonces and nothing depends on the request but TLS). helmet itself
 * still decides what the headers say; this only records what its middleware sets, once per
 * policy, and a hook copies the record onto each reply.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import helmet, { type HelmetOptions } from "helmet";

export interface HeaderSet {
  /** Header names in lower case, with the values helmet gives them. */
  set: Record<string, string>;
  /** Headers helmet takes away (X-Powered-By). */
  remove: string[];
}

/** What helmet's middleware does to a response under `options`, recorded. */
export function helmetHeaders(options: HelmetOptions): HeaderSet {
  const headers: HeaderSet = { set: {}, remove: [] };
  const recorder = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers.set[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : String(value);
    },
    removeHeader(name: string) {
      headers.remove.push(name.toLowerCase());
    },
  };
  let failure: unknown;
  let finished = false;
  // helmet's middleware only calls setHeader and removeHeader, synchronously, when no
  // directive is a function of the request (none here): the recorder stands in for both.
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (error?: unknown) => {
    failure = error;
    finished = true;
  });
  if (failure !== undefined) {
    throw failure instanceof Error ? failure : new Error("helmet's middleware failed", { cause: failure });
  }
  if (!finished) throw new Error("helmet's middleware did not finish synchronously");
  return headers;
}

const CSP_DIRECTIVES = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", "data:"],
  connectSrc: ["'self'"],
  formAction: ["'self'"],
  frameAncestors: ["'none'"],
};

// Not helmet's no-referrer: under it a browser sends `Origin: null` with this dashboard's own
// form posts, which the cross-site check (same-origin.ts) must refuse. same-origin still tells
// other sites nothing.
const REFERRER_POLICY = { policy: "same-origin" as const };

/**
 * Every answer gets helmet's headers. helmet's defaults add upgrade-insecure-requests, which
 * over plain HTTP on a host name sends the stylesheet, htmx and the page script to https, where
 * nothing answers: the page loads bare. It is asked for only when the request came over TLS
 * (directly, or from a trusted proxy).
 */
export function addSecurityHeaders(app: FastifyInstance): void {
  const overHttp = helmetHeaders({
    referrerPolicy: REFERRER_POLICY,
    contentSecurityPolicy: { directives: { ...CSP_DIRECTIVES, upgradeInsecureRequests: null } },
  });
  const overTls = helmetHeaders({
    referrerPolicy: REFERRER_POLICY,
    contentSecurityPolicy: { directives: CSP_DIRECTIVES },
  });
  app.addHook("onRequest", (request, reply, done) => {
    const headers = request.protocol === "https" ? overTls : overHttp;
    reply.headers(headers.set);
    for (const name of headers.remove) reply.removeHeader(name);
    done();
  });
}
