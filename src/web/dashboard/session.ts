/**
 * Who is looking at the dashboard. Without SWARM_API_KEY everyone on this machine may view and
 * act (the server only listens on loopback then, and refuses other sites' pages). With a key,
 * acting needs a login; viewing needs it too unless SWARM_DASHBOARD_PUBLIC is set.
 *
 * A login is a session kept on the server (dashboard_sessions), named by a random id that only
 * the cookie holds, beside an HMAC keyed by the operator key. So logging out ends the session
 * for every copy of the cookie, changing the key logs everyone out, and a restart (or another
 * replica) knows the same sessions. CSRF tokens are bound to the session id (see index.ts), so a
 * CSRF cookie planted by a sibling origin is worth nothing.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { ServerStorePort } from "../../storage/port.js";
import { hashToken, isOperatorDigest } from "../auth.js";

export const SESSION_COOKIE = "swarm_session";
/** The name over TLS: browsers keep a `__Host-` cookie to this exact origin, Secure, on path /. */
export const SECURE_SESSION_COOKIE = `__Host-${SESSION_COOKIE}`;
export const SESSION_LIFETIME_MS = 12 * 3600_000;

export interface DashboardSession {
  /** A key is set, so acting (and maybe viewing) needs a login. */
  loginRequired: boolean;
  /** Logged in, or no key is set. */
  operator: boolean;
  canView: boolean;
  canAct: boolean;
  /** Viewing is open to everyone even though a key is set. */
  viewOpen: boolean;
  /** The login's id, when logged in; CSRF tokens are bound to it. */
  sessionId: string | undefined;
  /** When the login ends by itself; its live pages are closed then. */
  expiresAt: Date | undefined;
}

/**
 * What a CSRF token is bound to: the login's id, or one shared word for viewers who have none
 * (@fastify/csrf refuses an empty one; without a login, other sites' pages are refused by origin).
 */
export function csrfUserInfo(session: DashboardSession | null | undefined): string {
  return session?.sessionId ?? "no-session";
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

export class SessionKeeper {
  private readonly signingKey: Buffer | undefined;
  private readonly apiKeyHash: string | undefined;

  constructor(
    apiKey: string | undefined,
    private readonly viewOpen: boolean,
    private readonly store: ServerStorePort,
    private readonly clock: () => Date = () => new Date(),
  ) {
    this.signingKey =
      apiKey === undefined
        ? undefined
        : createHmac("sha256", apiKey).update("swarm dashboard session v2").digest();
    this.apiKeyHash = apiKey === undefined ? undefined : hashToken(apiKey);
  }

  async sessionOf(request: FastifyRequest): Promise<DashboardSession> {
    if (this.signingKey === undefined) {
      return {
        loginRequired: false,
        operator: true,
        canView: true,
        canAct: true,
        viewOpen: true,
        sessionId: undefined,
        expiresAt: undefined,
      };
    }
    // Cookies are not parsed yet when a request was refused before the dashboard saw it.
    const cookies: Partial<Record<string, string>> = request.cookies ?? {};
    const login = await this.verify(cookies[SECURE_SESSION_COOKIE] ?? cookies[SESSION_COOKIE]);
    const operator = login !== undefined;
    return {
      loginRequired: true,
      operator,
      canView: operator || this.viewOpen,
      canAct: operator,
      viewOpen: this.viewOpen,
      sessionId: login?.id,
      expiresAt: login?.expiresAt,
    };
  }

  /** Whether `candidate` is the operator key, compared as the API compares it. */
  isOperatorKey(candidate: string): boolean {
    return isOperatorDigest(hashToken(candidate), this.apiKeyHash);
  }

  /** Start a session and hand its cookie to the browser; returns the new session id. */
  async logIn(request: FastifyRequest, reply: FastifyReply): Promise<string> {
    const now = this.clock();
    const id = randomBytes(32).toString("base64url");
    const expires = new Date(now.getTime() + SESSION_LIFETIME_MS);
    await this.store.saveSession(sha256(id), now.toISOString(), expires.toISOString(), now.toISOString());
    const tls = request.protocol === "https";
    reply.setCookie(tls ? SECURE_SESSION_COOKIE : SESSION_COOKIE, `${id}.${this.sign(id)}`, {
      path: "/",
      httpOnly: true,
      sameSite: "strict",
      secure: tls,
      maxAge: SESSION_LIFETIME_MS / 1000,
    });
    return id;
  }

  /** End the session on the server, so that no copy of its cookie works any more, and drop the cookie. */
  async logOut(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { sessionId } = request.dashboardSession;
    if (sessionId !== undefined) await this.store.removeSession(sha256(sessionId));
    reply.clearCookie(SESSION_COOKIE, { path: "/" });
    if (request.protocol === "https") reply.clearCookie(SECURE_SESSION_COOKIE, { path: "/", secure: true });
  }

  private sign(id: string): string {
    return createHmac("sha256", this.signingKey ?? "")
      .update(id)
      .digest("base64url");
  }

  /** The session a cookie names, if it is signed with the current key and still live on the server. */
  private async verify(cookie: string | undefined): Promise<{ id: string; expiresAt: Date } | undefined> {
    if (cookie === undefined || this.signingKey === undefined) return undefined;
    const match = /^([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})$/.exec(cookie);
    if (match === null) return undefined;
    const [, id = "", signature = ""] = match;
    if (!timingSafeEqual(Buffer.from(signature), Buffer.from(this.sign(id)))) return undefined;
    const expiresAt = await this.store.liveSession(sha256(id), this.clock().toISOString());
    return expiresAt === undefined ? undefined : { id, expiresAt: new Date(expiresAt) };
  }
}
