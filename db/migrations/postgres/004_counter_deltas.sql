-- The counters kept beside the tasks and bids (tasks per status, each agent's record) become
-- append-only deltas, folded into their totals in the background.
--
-- Updated in place, every transaction that changed a task's status updated two shared rows of
-- task_status_counts (the old status's, then the new one's) and held them to its commit. With
-- replicas deciding side by side, that made every status change in the cluster queue on those
-- rows, and two transactions taking them in opposite orders (one closing an auction: bidding,
-- then assigned; one putting a task up again: assigned, then bidding) deadlocked, which
-- PostgreSQL breaks only after deadlock_timeout (a second). An INSERT of a delta row takes no
-- lock anyone else waits for. Readers add the deltas to the totals; swarm_fold_counters() moves
-- them into the totals, one statement per table in key order, safe to run from any replica at
-- any time (a delta is deleted by exactly one fold, and two folds update the totals in the
-- same order).

CREATE TABLE task_status_count_deltas (
  status text COLLATE "C" NOT NULL,
  delta  bigint NOT NULL
);

CREATE TABLE agent_stats_deltas (
  agent_id        text COLLATE "C" NOT NULL,
  bids            bigint NOT NULL DEFAULT 0,
  wins            bigint NOT NULL DEFAULT 0,
  won_sats        bigint NOT NULL DEFAULT 0,
  tasks_completed bigint NOT NULL DEFAULT 0,
  tasks_failed    bigint NOT NULL DEFAULT 0,
  earned_sats     bigint NOT NULL DEFAULT 0
);
CREATE INDEX idx_agent_stats_deltas_agent ON agent_stats_deltas (agent_id);

CREATE OR REPLACE FUNCTION swarm_count_task_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO task_status_count_deltas (status, delta) VALUES (OLD.status, -1);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO task_status_count_deltas (status, delta) VALUES (NEW.status, 1);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION swarm_count_bid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.outcome IS NOT NULL THEN
    INSERT INTO agent_stats_deltas (agent_id, bids, wins, won_sats)
      VALUES (OLD.agent_id, -1, -((OLD.outcome = 'won')::int),
        -(CASE WHEN OLD.outcome = 'won' THEN OLD.bid_sats ELSE 0 END));
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.outcome IS NOT NULL THEN
    INSERT INTO agent_stats_deltas (agent_id, bids, wins, won_sats)
      VALUES (NEW.agent_id, 1, (NEW.outcome = 'won')::int,
        CASE WHEN NEW.outcome = 'won' THEN NEW.bid_sats ELSE 0 END);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION swarm_count_task_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.assigned_agent IS NOT NULL AND OLD.status IN ('completed', 'failed') THEN
    INSERT INTO agent_stats_deltas (agent_id, tasks_completed, tasks_failed, earned_sats)
      VALUES (OLD.assigned_agent, -((OLD.status = 'completed')::int), -((OLD.status = 'failed')::int),
        -(CASE WHEN OLD.status = 'completed' THEN COALESCE(OLD.winning_bid_sats, 0) ELSE 0 END));
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.assigned_agent IS NOT NULL AND NEW.status IN ('completed', 'failed') THEN
    INSERT INTO agent_stats_deltas (agent_id, tasks_completed, tasks_failed, earned_sats)
      VALUES (NEW.assigned_agent, (NEW.status = 'completed')::int, (NEW.status = 'failed')::int,
        CASE WHEN NEW.status = 'completed' THEN COALESCE(NEW.winning_bid_sats, 0) ELSE 0 END);
  END IF;
  RETURN NULL;
END $$;

-- Move every delta into its total. Each DELETE takes the deltas committed before it began;
-- a concurrent fold that reached the same rows finds them gone and counts nothing twice.
CREATE FUNCTION swarm_fold_counters() RETURNS void LANGUAGE sql AS $$
  WITH moved AS (DELETE FROM task_status_count_deltas RETURNING status, delta)
  INSERT INTO task_status_counts (status, count)
    SELECT status, SUM(delta) FROM moved GROUP BY status ORDER BY status
  ON CONFLICT (status) DO UPDATE SET count = task_status_counts.count + excluded.count;

  WITH moved AS (DELETE FROM agent_stats_deltas
                 RETURNING agent_id, bids, wins, won_sats, tasks_completed, tasks_failed, earned_sats)
  INSERT INTO agent_stats (agent_id, bids, wins, won_sats, tasks_completed, tasks_failed, earned_sats)
    SELECT agent_id, SUM(bids), SUM(wins), SUM(won_sats), SUM(tasks_completed), SUM(tasks_failed), SUM(earned_sats)
    FROM moved GROUP BY agent_id ORDER BY agent_id
  ON CONFLICT (agent_id) DO UPDATE SET
    bids = agent_stats.bids + excluded.bids,
    wins = agent_stats.wins + excluded.wins,
    won_sats = agent_stats.won_sats + excluded.won_sats,
    tasks_completed = agent_stats.tasks_completed + excluded.tasks_completed,
    tasks_failed = agent_stats.tasks_failed + excluded.tasks_failed,
    earned_sats = agent_stats.earned_sats + excluded.earned_sats;
$$;
