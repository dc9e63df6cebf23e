/**
 * Whom a websocket counts against, for the per-client cap and for closing a client's sockets
 * when its credentials are revoked (see admitSocket in app.ts).
 */
/** Close code for sockets whose credentials were revoked (a deregistered agent, a rotated token, a logout). */
export const CREDENTIALS_REVOKED = 4401;

/** The client an agent's websockets count against. */
export const agentSockets = (agentId: string) => `agent:${agentId}`;
/** The client a dashboard login's websockets count against. */
export const sessionSockets = (sessionId: string) => `session:${sessionId}`;
