-- Rounds a task's agent handed back (a graceful stop: `task.released`). They are not the task's
-- fault, so the limit of auction rounds counts `attempt - releases`, not `attempt`.
ALTER TABLE tasks ADD COLUMN releases INTEGER NOT NULL DEFAULT 0 CHECK (releases >= 0);
