-- The task lifecycle: a `waiting` status (a retry's backoff, or dependencies not completed), the winner's
-- acknowledgement window, a run's deadline, retries, re-runs, and `due_at`, the one time at which
-- a task's next timed step is due (derived by the core, see dueAt in src/coordinator/state.ts):
-- what every replica's Tick claims, by one index.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
  CHECK (status IN ('waiting', 'bidding', 'assigned', 'running', 'completed', 'failed', 'cancelled'));

ALTER TABLE tasks
  ADD COLUMN ack_ms           integer CHECK (ack_ms > 0),
  ADD COLUMN timeout_ms       integer CHECK (timeout_ms > 0),
  ADD COLUMN max_attempts     integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
  ADD COLUMN retry_backoff_ms integer NOT NULL DEFAULT 0 CHECK (retry_backoff_ms >= 0),
  ADD COLUMN failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
  ADD COLUMN failed_agents    text COLLATE "C" NOT NULL DEFAULT '[]',  -- JSON array
  ADD COLUMN declined_agents  text COLLATE "C" NOT NULL DEFAULT '[]',  -- JSON array
  ADD COLUMN opens_at         text COLLATE "C",
  ADD COLUMN due_at           text COLLATE "C",
  ADD COLUMN retry_of         text COLLATE "C",
  ADD COLUMN retried_by       text COLLATE "C",
  ADD COLUMN depends_on       text COLLATE "C" NOT NULL DEFAULT '[]',  -- JSON array, as posted
  ADD COLUMN waiting_on       text COLLATE "C" NOT NULL DEFAULT '[]',  -- JSON array: those not completed yet
  ADD COLUMN schedule_id      text COLLATE "C",                         -- the schedule whose firing posted it
  ADD COLUMN award            text COLLATE "C" NOT NULL DEFAULT 'lowest' CHECK (award IN ('lowest', 'best_value'));

-- Tasks from before keep their behaviour: no acknowledgement window (ack_ms NULL), no deadline.
-- The rounds they lost to vanished agents become their failures, as the old limit counted them.
-- Only the rows that change: finished history with nothing to carry over is left alone.
UPDATE tasks SET failures = GREATEST(0, attempt - releases - 1),
  due_at = CASE WHEN status = 'bidding' THEN auction_closes_at END
  WHERE status = 'bidding' OR attempt - releases > 1;

DROP INDEX idx_tasks_due;
CREATE INDEX idx_tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;

-- The waiting tasks that wait on a task: what a command ending that task locks (lock-plan.ts).
CREATE INDEX idx_tasks_waiting_on ON tasks USING gin ((waiting_on::jsonb)) WHERE status = 'waiting';

-- Schedules: a cron expression and the body of the task each firing posts. A firing writes its
-- task and moves next_fire_at on in one transaction, on the condition that next_fire_at is still
-- what the firing saw (a compare-and-set): replicas that see a firing due together post it once.
CREATE TABLE schedules (
  pos           bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
  id            text COLLATE "C" PRIMARY KEY,
  cron          text COLLATE "C" NOT NULL,
  timezone      text COLLATE "C" NOT NULL,
  task          text COLLATE "C" NOT NULL,          -- JSON: the checked task body
  paused        boolean NOT NULL DEFAULT false,
  next_fire_at  text COLLATE "C",                   -- NULL while paused
  last_fired_at text COLLATE "C",
  fired         integer NOT NULL DEFAULT 0,
  created_at    text COLLATE "C" NOT NULL
);
CREATE INDEX idx_schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- Agents' records, as the award rule best_value weighs them, and how long their stream counts as
-- open (renewed by the server while it is; NULL: never opened one).
ALTER TABLE agents
  ADD COLUMN runs_completed integer NOT NULL DEFAULT 0,
  ADD COLUMN runs_failed    integer NOT NULL DEFAULT 0,
  ADD COLUMN runs_timed_out integer NOT NULL DEFAULT 0,
  ADD COLUMN stream_until   text COLLATE "C";
