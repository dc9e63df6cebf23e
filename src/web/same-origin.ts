/**
 * Requests must be addressed to this server by one of its own names, and anything that changes
 * state or opens a websocket must come from this server's own pages or from a client that is not
 * a browser page at all.
 *
 * Why: without a key the server trusts everything on this machine, and a web page from another
 * origin runs on this machine too. A page on another port can open a websocket (browsers do not
 * apply the same-origin policy to them) or send a "simple" POST that needs no preflight; a page
 * on a name the attacker points at 127.0.0.1 (DNS rebinding) is even same-origin with us. So:
 *
 * - The Host header must name this server: a loopback name or address, the address it listens
 *   on, or a name in SWARM_ALLOWED_HOSTS (for names behind a proxy). Anything else is 421.
 * - A state-changing request or websocket upgrade that a browser marks as coming from another
 *   origin (`Origin`, or `Sec-Fetch-Site: cross-site|same-site`) is 403. Non-browser clients
 *   send neither header and are judged by their credentials as before.
 * - A state-changing API call carries `Content-Type: application/json` or an `Authorization`
 *   header: neither can be sent across origins without a preflight this server never grants.
 */
import type { FastifyRequest } from "fastify";
import { SwarmError } from "../errors.js";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** Whether the request asks to become a websocket. */
export function isWebsocketUpgrade(request: FastifyRequest): boolean {
  return request.headers.upgrade?.toLowerCase() === "websocket";
}

/** Names this server answers to; `any` turns the Host check off (SWARM_ALLOWED_HOSTS=*). */
export type AllowedHosts = readonly string[] | "any";

/** A host name or address as the Host header carries it, without its port and brackets, lower-case. */
export function hostName(host: string): string {
  const lower = host.trim().toLowerCase();
  if (lower.startsWith("["))
    return lower.slice(1, lower.indexOf("]") === -1 ? undefined : lower.indexOf("]"));
  const colon = lower.lastIndexOf(":");
  // More than one colon without brackets: a bare IPv6 address, which has no port.
  return colon !== -1 && lower.indexOf(":") === colon ? lower.slice(0, colon) : lower;
}

/** localhost and its subdomains, 127.0.0.0/8 and ::1: names that can only mean this machine. */
export function isLoopbackName(name: string): boolean {
  return (
    name === "localhost" ||
    name.endsWith(".localhost") ||
    name === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)
  );
}

/** Whether a page of `origin` is this server's own, reached as `host` (default ports compare equal). */
function sameHost(origin: string, host: string): boolean {
  try {
    const page = new URL(origin);
    return page.host === new URL(`${page.protocol}//${host}`).host;
  } catch {
    return false; // "null" (sandboxed pages, file:) or something that is not an origin at all
  }
}

export class SameOriginGuard {
  private readonly allowed: Set<string> | "any";

  constructor(allowedHosts: AllowedHosts) {
    this.allowed = allowedHosts === "any" ? "any" : new Set(allowedHosts.map(hostName));
  }

  /** Throws unless the Host header names this server. */
  checkHost(request: FastifyRequest): void {
    if (this.allowed === "any") return;
    // request.host is the Host header, or X-Forwarded-Host from a trusted proxy.
    const host = request.host;
    const name = hostName(host);
    if (isLoopbackName(name) || this.allowed.has(name)) return;
    throw new SwarmError(
      "HOST_NOT_ALLOWED",
      `this server does not answer to the name ${JSON.stringify(host)}; add it to SWARM_ALLOWED_HOSTS if it is one of its names`,
      { field: "headers.host" },
    );
  }

  /** Throws when a browser says the request comes from a page of another origin. */
  checkOrigin(request: FastifyRequest): void {
    const origin = request.headers.origin;
    if (origin !== undefined) {
      if (!sameHost(origin, request.host)) {
        throw new SwarmError("CROSS_SITE_REQUEST", `requests from pages of ${origin} are refused`, {
          field: "headers.origin",
        });
      }
      return;
    }
    const site = request.headers["sec-fetch-site"];
    if (site === "cross-site" || site === "same-site") {
      throw new SwarmError("CROSS_SITE_REQUEST", `requests from another site's pages are refused`, {
        field: "headers.sec-fetch-site",
      });
    }
  }

  /** Whether a browser says the request comes from a page of another origin (without throwing). */
  isForeign(request: FastifyRequest): boolean {
    try {
      this.checkOrigin(request);
      return false;
    } catch {
      return true;
    }
  }

  /**
   * Every request: the Host. Websockets, state changes and anything under /api/ also the
   * Origin (the API serves no other site, and even a cross-site GET spends the shared budgets of
   * the keyless default); API state changes also the form. Dashboard pages may be reached by a
   * link from anywhere.
   */
  check(request: FastifyRequest): void {
    this.checkHost(request);
    const upgrade = isWebsocketUpgrade(request);
    // The route's own path, not the raw URL: /%61pi/tasks reaches the same route as /api/tasks.
    const api = (request.routeOptions.url ?? request.url).startsWith("/api/");
    if (SAFE_METHODS.has(request.method) && !upgrade && !api) return;
    this.checkOrigin(request);
    if (upgrade || !api || SAFE_METHODS.has(request.method)) return;
    if (request.headers.authorization !== undefined) return;
    const type = request.headers["content-type"]?.split(";")[0]?.trim().toLowerCase();
    if (type !== "application/json") {
      throw new SwarmError(
        "UNSUPPORTED_MEDIA_TYPE",
        "a call that changes something sends Content-Type: application/json (or an Authorization header), even with no body",
        { field: "headers.content-type" },
      );
    }
  }
}
