-- Bounds on what used to grow without end: finished work gets a retention of its own, and what
-- agents report is capped per task and per agent per hour, by counters kept in the same
-- transactions as the reports (so that every replica of a cluster counts the same).

-- Retention finds its rows by age through these, a chunk at a time. Only a final task has
-- completed_at, and only a deregistered agent left_at. The agents' index ends in id: retention
-- walks it with a (left_at, id) cursor, past agents still named by kept tasks.
CREATE INDEX idx_tasks_finished ON tasks (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX idx_agents_left ON agents (left_at, id) WHERE left_at IS NOT NULL;
CREATE INDEX idx_idempotency_keys_created ON idempotency_keys (created_at);
-- Deleting a task or an agent makes SQLite look for rows that still reference it (foreign keys);
-- without these each delete would read the whole table. Revoking an agent's tokens reads by it too.
CREATE INDEX idx_idempotency_keys_task ON idempotency_keys (task_id);
CREATE INDEX idx_agent_tokens_agent ON agent_tokens (agent_id);

-- How many events agents have reported on the task (bids, start, tool reports, complete, fail),
-- for SWARM_MAX_EVENTS_PER_TASK. Updated by its own statement, never by the task's upsert.
ALTER TABLE tasks ADD COLUMN reported_events INTEGER NOT NULL DEFAULT 0;
-- Tasks still open count what they already hold, so an upgrade does not hand them a fresh
-- allowance. An agent's own events carry its id as both source and agent_id.
UPDATE tasks SET reported_events =
  (SELECT COUNT(*) FROM event_log e WHERE e.task_id = tasks.id AND e.source = e.agent_id)
  WHERE status IN ('bidding', 'assigned', 'running');

-- Bytes of events an agent's reports stored in the current clock hour (UTC), for
-- SWARM_MAX_AGENT_BYTES_PER_HOUR: one row per agent, started again when the hour turns.
CREATE TABLE agent_report_usage (
  agent_id TEXT    PRIMARY KEY REFERENCES agents (id),
  hour     TEXT    NOT NULL,                  -- YYYY-MM-DDTHH, UTC
  bytes    INTEGER NOT NULL
) WITHOUT ROWID;
