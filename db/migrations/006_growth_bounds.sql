-- Bounds on what used to grow without end: finished work gets a retention of its own.

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
