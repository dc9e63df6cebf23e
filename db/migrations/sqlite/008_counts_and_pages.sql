-- Counts that /metrics, the overview and every agent's stats read, kept by triggers in the same
-- transaction as the rows they count: a read is one row (or six) whatever the size of the
-- tables. Counting at read time held the event loop for 135 ms per /metrics scrape with a million
-- tasks, and for hundreds of ms per agent with twenty thousand bids.

CREATE TABLE task_status_counts (
  status TEXT    PRIMARY KEY,
  count  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO task_status_counts (status, count) SELECT status, COUNT(*) FROM tasks GROUP BY status;

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

-- Per agent, what store.ts used to aggregate on every read: bids of closed rounds (those with an
-- outcome: a bid in an open round is not counted, so the count gives no bidder away), wins and
-- their sats, and the completed and failed tasks assigned to it with the sats they earned.
CREATE TABLE agent_stats (
  agent_id        TEXT    PRIMARY KEY,
  bids            INTEGER NOT NULL DEFAULT 0,
  wins            INTEGER NOT NULL DEFAULT 0,
  won_sats        INTEGER NOT NULL DEFAULT 0,
  tasks_completed INTEGER NOT NULL DEFAULT 0,
  tasks_failed    INTEGER NOT NULL DEFAULT 0,
  earned_sats     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

INSERT INTO agent_stats (agent_id, bids, wins, won_sats)
  SELECT agent_id, COUNT(outcome), SUM(outcome = 'won'), COALESCE(SUM(CASE WHEN outcome = 'won' THEN bid_sats END), 0)
  FROM bids WHERE outcome IS NOT NULL GROUP BY agent_id;

INSERT INTO agent_stats (agent_id, tasks_completed, tasks_failed, earned_sats)
  SELECT assigned_agent, SUM(status = 'completed'), SUM(status = 'failed'),
    COALESCE(SUM(CASE WHEN status = 'completed' THEN winning_bid_sats END), 0)
  FROM tasks WHERE assigned_agent IS NOT NULL AND status IN ('completed', 'failed') GROUP BY assigned_agent
  ON CONFLICT (agent_id) DO UPDATE SET tasks_completed = excluded.tasks_completed,
    tasks_failed = excluded.tasks_failed, earned_sats = excluded.earned_sats;

-- A bid counts once it has an outcome. Bids of open rounds (no outcome), the hottest write,
-- pass the WHEN clauses without doing anything.
CREATE TRIGGER agent_stats_bid_insert AFTER INSERT ON bids
WHEN NEW.outcome IS NOT NULL
BEGIN
  INSERT INTO agent_stats (agent_id, bids, wins, won_sats)
    VALUES (NEW.agent_id, 1, NEW.outcome = 'won', CASE WHEN NEW.outcome = 'won' THEN NEW.bid_sats ELSE 0 END)
    ON CONFLICT (agent_id) DO UPDATE SET bids = bids + excluded.bids, wins = wins + excluded.wins,
      won_sats = won_sats + excluded.won_sats;
END;

CREATE TRIGGER agent_stats_bid_update AFTER UPDATE OF outcome, bid_sats, agent_id ON bids
WHEN (OLD.outcome IS NOT NULL OR NEW.outcome IS NOT NULL)
  AND (OLD.outcome IS NOT NEW.outcome OR OLD.bid_sats IS NOT NEW.bid_sats OR OLD.agent_id IS NOT NEW.agent_id)
BEGIN
  UPDATE agent_stats SET bids = bids - 1, wins = wins - (OLD.outcome = 'won'),
    won_sats = won_sats - CASE WHEN OLD.outcome = 'won' THEN OLD.bid_sats ELSE 0 END
    WHERE agent_id = OLD.agent_id AND OLD.outcome IS NOT NULL;
  INSERT INTO agent_stats (agent_id, bids, wins, won_sats)
    SELECT NEW.agent_id, 1, NEW.outcome = 'won', CASE WHEN NEW.outcome = 'won' THEN NEW.bid_sats ELSE 0 END
    WHERE NEW.outcome IS NOT NULL
    ON CONFLICT (agent_id) DO UPDATE SET bids = bids + excluded.bids, wins = wins + excluded.wins,
      won_sats = won_sats + excluded.won_sats;
END;

CREATE TRIGGER agent_stats_bid_delete AFTER DELETE ON bids
WHEN OLD.outcome IS NOT NULL
BEGIN
  UPDATE agent_stats SET bids = bids - 1, wins = wins - (OLD.outcome = 'won'),
    won_sats = won_sats - CASE WHEN OLD.outcome = 'won' THEN OLD.bid_sats ELSE 0 END
    WHERE agent_id = OLD.agent_id;
END;

-- A task counts for its assigned agent once it has completed or failed.
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

-- Listing agents a page at a time: the API in registration order (rowid), optionally by status;
-- the dashboard busy, then idle, then offline, by name within each, leaving out those who left.
CREATE INDEX idx_agents_status ON agents (status);
CREATE INDEX idx_agents_board ON agents (status, name COLLATE NOCASE) WHERE left_at IS NULL;
