-- The task lifecycle: a `waiting` status (a retry's backoff, or dependencies not completed), the winner's
-- acknowledgement window, a run's deadline, retries, re-runs, and `due_at`, the one time at which
-- a task's next timed step is due (derived by the core, see dueAt in src/coordinator/state.ts).
--
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt the documented way:
-- a new table, every row copied with its rowid (the paging cursor), the old one dropped, the new
-- one renamed, its indexes and triggers made again. database.ts runs migrations with foreign
-- keys off and checks them before the commit, as that procedure requires.

CREATE TABLE tasks_rebuilt (
  id                    TEXT    PRIMARY KEY,
  description           TEXT    NOT NULL,
  status                TEXT    NOT NULL
                        CHECK (status IN ('waiting', 'bidding', 'assigned', 'running', 'completed', 'failed', 'cancelled')),
  required_capabilities TEXT    NOT NULL,     -- JSON array
  auction_ms            INTEGER NOT NULL,
  max_bid_sats          INTEGER,
  attempt               INTEGER NOT NULL DEFAULT 1,
  assigned_agent        TEXT    REFERENCES agents (id),
  winning_bid_sats      INTEGER,
  result                TEXT,
  error                 TEXT,
  created_at            TEXT    NOT NULL,
  auction_closes_at     TEXT,
  assigned_at           TEXT,
  started_at            TEXT,
  completed_at          TEXT,
  releases              INTEGER NOT NULL DEFAULT 0 CHECK (releases >= 0),
  reported_events       INTEGER NOT NULL DEFAULT 0,
  ack_ms                INTEGER CHECK (ack_ms > 0),
  timeout_ms            INTEGER CHECK (timeout_ms > 0),
  max_attempts          INTEGER NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
  retry_backoff_ms      INTEGER NOT NULL DEFAULT 0 CHECK (retry_backoff_ms >= 0),
  failures              INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
  failed_agents         TEXT    NOT NULL DEFAULT '[]',  -- JSON array
  declined_agents       TEXT    NOT NULL DEFAULT '[]',  -- JSON array
  opens_at              TEXT,
  due_at                TEXT,
  retry_of              TEXT,
  retried_by            TEXT,
  depends_on            TEXT    NOT NULL DEFAULT '[]',  -- JSON array, as posted
  waiting_on            TEXT    NOT NULL DEFAULT '[]',  -- JSON array: those not completed yet
  schedule_id           TEXT,                           -- the schedule whose firing posted it
  award                 TEXT    NOT NULL DEFAULT 'lowest' CHECK (award IN ('lowest', 'best_value'))
);

-- Tasks from before keep their behaviour: no acknowledgement window (ack_ms NULL), no deadline.
-- The rounds they lost to vanished agents become their failures, as the old limit counted them.
INSERT INTO tasks_rebuilt (rowid, id, description, status, required_capabilities, auction_ms, max_bid_sats,
  attempt, assigned_agent, winning_bid_sats, result, error, created_at, auction_closes_at, assigned_at,
  started_at, completed_at, releases, reported_events, failures, due_at)
SELECT rowid, id, description, status, required_capabilities, auction_ms, max_bid_sats,
  attempt, assigned_agent, winning_bid_sats, result, error, created_at, auction_closes_at, assigned_at,
  started_at, completed_at, releases, reported_events, MAX(0, attempt - releases - 1),
  CASE WHEN status = 'bidding' THEN auction_closes_at END
FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_rebuilt RENAME TO tasks;

CREATE INDEX idx_tasks_status ON tasks (status, created_at);
CREATE INDEX idx_tasks_agent ON tasks (assigned_agent, status);
CREATE INDEX idx_tasks_created ON tasks (created_at);
CREATE INDEX idx_tasks_status_rowid ON tasks (status);
CREATE INDEX idx_tasks_agent_rowid ON tasks (assigned_agent);
CREATE INDEX idx_tasks_finished ON tasks (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX idx_tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;

-- The triggers of 008, unchanged.
CREATE TRIGGER task_status_counts_insert AFTER INSERT ON tasks
BEGIN
  INSERT INTO task_status_counts (status, count) VALUES (NEW.status, 1)
    ON CONFLICT (status) DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER task_status_counts_update AFTER UPDATE OF status ON tasks
WHEN OLD.status IS NOT NEW.status
BEGIN
  UPDATE task_status_counts SET count = count - 1 WHERE status = OLD.status;
  INSERT INTO task_status_counts (status, count) VALUES (NEW.status, 1)
    ON CONFLICT (status) DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER task_status_counts_delete AFTER DELETE ON tasks
BEGIN
  UPDATE task_status_counts SET count = count - 1 WHERE status = OLD.status;
END;

CREATE TRIGGER agent_stats_task_insert AFTER INSERT ON tasks
WHEN NEW.assigned_agent IS NOT NULL AND NEW.status IN ('completed', 'failed')
BEGIN
  INSERT INTO agent_stats (agent_id, tasks_completed, tasks_failed, earned_sats)
    VALUES (NEW.assigned_agent, NEW.status = 'completed', NEW.status = 'failed',
      CASE WHEN NEW.status = 'completed' THEN COALESCE(NEW.winning_bid_sats, 0) ELSE 0 END)
    ON CONFLICT (agent_id) DO UPDATE SET tasks_completed = tasks_completed + excluded.tasks_completed,
      tasks_failed = tasks_failed + excluded.tasks_failed, earned_sats = earned_sats + excluded.earned_sats;
END;

CREATE TRIGGER agent_stats_task_update AFTER UPDATE OF status, assigned_agent, winning_bid_sats ON tasks
WHEN (OLD.assigned_agent IS NOT NULL AND OLD.status IN ('completed', 'failed'))
  OR (NEW.assigned_agent IS NOT NULL AND NEW.status IN ('completed', 'failed'))
BEGIN
  UPDATE agent_stats SET tasks_completed = tasks_completed - (OLD.status = 'completed'),
    tasks_failed = tasks_failed - (OLD.status = 'failed'),
    earned_sats = earned_sats - CASE WHEN OLD.status = 'completed' THEN COALESCE(OLD.winning_bid_sats, 0) ELSE 0 END
    WHERE agent_id = OLD.assigned_agent AND OLD.status IN ('completed', 'failed');
  INSERT INTO agent_stats (agent_id, tasks_completed, tasks_failed, earned_sats)
    SELECT NEW.assigned_agent, NEW.status = 'completed', NEW.status = 'failed',
      CASE WHEN NEW.status = 'completed' THEN COALESCE(NEW.winning_bid_sats, 0) ELSE 0 END
    WHERE NEW.assigned_agent IS NOT NULL AND NEW.status IN ('completed', 'failed')
    ON CONFLICT (agent_id) DO UPDATE SET tasks_completed = tasks_completed + excluded.tasks_completed,
      tasks_failed = tasks_failed + excluded.tasks_failed, earned_sats = earned_sats + excluded.earned_sats;
END;

CREATE TRIGGER agent_stats_task_delete AFTER DELETE ON tasks
WHEN OLD.assigned_agent IS NOT NULL AND OLD.status IN ('completed', 'failed')
BEGIN
  UPDATE agent_stats SET tasks_completed = tasks_completed - (OLD.status = 'completed'),
    tasks_failed = tasks_failed - (OLD.status = 'failed'),
    earned_sats = earned_sats - CASE WHEN OLD.status = 'completed' THEN COALESCE(OLD.winning_bid_sats, 0) ELSE 0 END
    WHERE agent_id = OLD.assigned_agent;
END;

-- Schedules: a cron expression and the body of the task each firing posts. A firing writes its
-- task and moves next_fire_at on in one transaction, on the condition that next_fire_at is still
-- what the firing saw (a compare-and-set), so no firing posts twice.
CREATE TABLE schedules (
  id            TEXT    PRIMARY KEY,
  cron          TEXT    NOT NULL,
  timezone      TEXT    NOT NULL,
  task          TEXT    NOT NULL,          -- JSON: the checked task body
  paused        INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
  next_fire_at  TEXT,                      -- NULL while paused
  last_fired_at TEXT,
  fired         INTEGER NOT NULL DEFAULT 0,
  created_at    TEXT    NOT NULL
);
CREATE INDEX idx_schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- Agents' records, as the award rule best_value weighs them, and how long their stream counts as
-- open (renewed by the server while it is; NULL: never opened one).
ALTER TABLE agents ADD COLUMN runs_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN runs_failed    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN runs_timed_out INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN stream_until   TEXT;
