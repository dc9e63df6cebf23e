-- Dashboard logins, kept on the server so that logging out ends a session everywhere (a copied
-- cookie stops working) and every replica of a cluster knows the same sessions.
CREATE TABLE dashboard_sessions (
  id_hash    TEXT PRIMARY KEY,               -- SHA-256 of the session id; the id is only in the cookie
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- Secrets the server makes for itself once (the key CSRF tokens are signed with), so that they
-- survive a restart and are shared by every replica.
CREATE TABLE server_secrets (
  name       TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  created_at TEXT NOT NULL
) WITHOUT ROWID;
