/**
 * Who is looking at the dashboard. Without SWARM_API_KEY everyone on this machine may view and
 * act (the server only listens on loopback then). With a key, acting needs a login that sets a
 * signed cookie; viewing needs it too unless SWARM_DASHBOARD_PUBLIC is set.
 *
 * The cookie holds only its issue time and an HMAC keyed by the operator key, so it survives a
 * restart, and changing the key logs everyone out.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { hashToken, isOperatorDigest } from "../auth.js";

export const SESSION_COOKIE = "swarm_session";
const SESSION_LIFETIME_MS = 12 * 3600_000;

export interface DashboardSession {
  /** A key is set, so acting (and maybe viewing) needs a login. */
  loginRequired: boolean;
  /** Logged in, or no key is set. */
  operator: boolean;
  canView: boolean;
  canAct: boolean;
  /** Viewing is open to everyone even though a key is set. */
  viewOpen: boolean;
}

export class SessionKeeper {
  private readonly signingKey: Buffer | undefined;
  private readonly apiKeyHash: string | undefined;

  constructor(
    apiKey: string | undefined,
    private readonly viewOpen: boolean,
    private readonly clock: () => Date = () => new Date(),
  ) {
    this.signingKey =
      apiKey === undefined
        ? undefined
        : createHmac("sha256", apiKey).update("swarm dashboard session v1").digest();
    this.apiKeyHash = apiKey === undefined ? undefined : hashToken(apiKey);
  }

  sessionOf(request: FastifyRequest): DashboardSession {
    if (this.signingKey === undefined) {
      return { loginRequired: false, operator: true, canView: true, canAct: true, viewOpen: true };
    }
    const operator = this.verify(request.cookies[SESSION_COOKIE]);
    return {
      loginRequired: true,
      operator,
      canView: operator || this.viewOpen,
      canAct: operator,
      viewOpen: this.viewOpen,
    };
  }

  /** Whether `candidate` is the operator key, compared as the API compares it. */
  isOperatorKey(candidate: string): boolean {
    return isOperatorDigest(hashToken(candidate), this.apiKeyHash);
  }

  logIn(request: FastifyRequest, reply: FastifyReply): void {
    const issued = String(this.clock().getTime());
    reply.setCookie(SESSION_COOKIE, `${issued}.${this.sign(issued)}`, {
      path: "/",
      httpOnly: true,
      sameSite: "strict",
      secure: request.protocol === "https",
      maxAge: SESSION_LIFETIME_MS / 1000,
    });
  }

  logOut(reply: FastifyReply): void {
    reply.clearCookie(SESSION_COOKIE, { path: "/" });
  }

  private sign(issued: string): string {
    return createHmac("sha256", this.signingKey ?? "")
      .update(issued)
      .digest("base64url");
  }

  private verify(cookie: string | undefined): boolean {
    if (cookie === undefined || this.signingKey === undefined) return false;
    const match = /^(\d{1,15})\.([A-Za-z0-9_-]{43})$/.exec(cookie);
    if (match === null) return false;
    const [, issued = "", signature = ""] = match;
    const expected = Buffer.from(this.sign(issued));
    if (!timingSafeEqual(Buffer.from(signature), expected)) return false;
    const age = this.clock().getTime() - Number(issued);
    return age >= 0 && age < SESSION_LIFETIME_MS;
  }
}
