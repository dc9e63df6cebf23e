-- What the HTTP API keeps beside the coordinator's state.

-- Agent tokens are shown once at registration and stored only as their SHA-256.
CREATE TABLE agent_tokens (
  token_hash TEXT PRIMARY KEY,
  agent_id   TEXT NOT NULL REFERENCES agents (id),
  created_at TEXT NOT NULL
) WITHOUT ROWID;

-- A retried POST /api/tasks with the same Idempotency-Key returns the task it created.
CREATE TABLE idempotency_keys (
  key        TEXT PRIMARY KEY,
  task_id    TEXT NOT NULL REFERENCES tasks (id),
  created_at TEXT NOT NULL
) WITHOUT ROWID;

-- Task listing pages newest first by rowid, optionally by status or by agent.
CREATE INDEX idx_tasks_status_rowid ON tasks (status);
CREATE INDEX idx_tasks_agent_rowid ON tasks (assigned_agent);
