-- The coordinator's tables on PostgreSQL, column for column those of the SQLite side (its
-- migrations 002 to 009 taken together), so that both engines store the same records.
-- `pos` stands in for SQLite's rowid: the order of registration and posting that lists page by.

CREATE TABLE agents (
  pos            bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
  id             text COLLATE "C"    PRIMARY KEY,
  name           text COLLATE "C"    NOT NULL,
  capabilities   text COLLATE "C"    NOT NULL,            -- JSON array of lower-case names
  max_concurrent integer NOT NULL CHECK (max_concurrent >= 1),
  status         text COLLATE "C"    NOT NULL CHECK (status IN ('idle', 'busy', 'offline')),
  registered_at  text COLLATE "C"    NOT NULL,
  last_seen      text COLLATE "C"    NOT NULL,
  grace_until    text COLLATE "C",                        -- offline since a restart, not yet lost
  left_at        text COLLATE "C"                         -- deregistered
);
CREATE INDEX idx_agents_status ON agents (status, pos);
-- The dashboard's order: by name with ASCII letters folded (SQLite's NOCASE), byte by byte,
-- within each status, of those who have not left.
CREATE INDEX idx_agents_board ON agents (status, (swarm_ascii_lower(name) COLLATE "C"), pos) WHERE left_at IS NULL;
CREATE INDEX idx_agents_left ON agents (left_at, id) WHERE left_at IS NOT NULL;

CREATE TABLE tasks (
  pos                   bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
  id                    text COLLATE "C"    PRIMARY KEY,
  description           text COLLATE "C"    NOT NULL,
  status                text COLLATE "C"    NOT NULL
                        CHECK (status IN ('bidding', 'assigned', 'running', 'completed', 'failed', 'cancelled')),
  required_capabilities text COLLATE "C"    NOT NULL,     -- JSON array
  auction_ms            integer NOT NULL,
  max_bid_sats          integer,
  attempt               integer NOT NULL DEFAULT 1,
  releases              integer NOT NULL DEFAULT 0 CHECK (releases >= 0),
  assigned_agent        text COLLATE "C"    REFERENCES agents (id),
  winning_bid_sats      integer,
  result                text COLLATE "C",
  error                 text COLLATE "C",
  created_at            text COLLATE "C"    NOT NULL,
  auction_closes_at     text COLLATE "C",
  assigned_at           text COLLATE "C",
  started_at            text COLLATE "C",
  completed_at          text COLLATE "C",
  reported_events       integer NOT NULL DEFAULT 0
);
CREATE INDEX idx_tasks_status ON tasks (status, pos);
CREATE INDEX idx_tasks_agent ON tasks (assigned_agent, status, pos);
CREATE INDEX idx_tasks_agent_pos ON tasks (assigned_agent, pos);
CREATE INDEX idx_tasks_finished ON tasks (completed_at) WHERE completed_at IS NOT NULL;
-- Open auctions by deadline: what a Tick on any replica looks for.
CREATE INDEX idx_tasks_due ON tasks (auction_closes_at) WHERE status = 'bidding';

CREATE TABLE bids (
  task_id   text COLLATE "C"    NOT NULL REFERENCES tasks (id),
  attempt   integer NOT NULL,
  agent_id  text COLLATE "C"    NOT NULL REFERENCES agents (id),
  bid_sats  integer NOT NULL CHECK (bid_sats >= 1),
  bid_order integer NOT NULL,
  placed_at text COLLATE "C"    NOT NULL,
  outcome   text COLLATE "C"    CHECK (outcome IN ('won', 'lost')),
  PRIMARY KEY (task_id, attempt, agent_id)
);
CREATE INDEX idx_bids_agent ON bids (agent_id, outcome);

CREATE TABLE agent_tokens (
  token_hash text COLLATE "C" PRIMARY KEY,
  agent_id   text COLLATE "C" NOT NULL REFERENCES agents (id),
  created_at text COLLATE "C" NOT NULL
);
CREATE INDEX idx_agent_tokens_agent ON agent_tokens (agent_id);

CREATE TABLE idempotency_keys (
  key            text COLLATE "C" PRIMARY KEY,
  task_id        text COLLATE "C" NOT NULL REFERENCES tasks (id),
  created_at     text COLLATE "C" NOT NULL,
  request_digest text COLLATE "C"
);
CREATE INDEX idx_idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX idx_idempotency_keys_task ON idempotency_keys (task_id);

CREATE TABLE dashboard_sessions (
  id_hash    text COLLATE "C" PRIMARY KEY,               -- SHA-256 of the session id; the id is only in the cookie
  created_at text COLLATE "C" NOT NULL,
  expires_at text COLLATE "C" NOT NULL
);
CREATE INDEX idx_dashboard_sessions_expiry ON dashboard_sessions (expires_at);

CREATE TABLE server_secrets (
  name       text COLLATE "C" PRIMARY KEY,
  value      text COLLATE "C" NOT NULL,
  created_at text COLLATE "C" NOT NULL
);

CREATE TABLE agent_report_usage (
  agent_id text COLLATE "C"    PRIMARY KEY REFERENCES agents (id),
  hour     text COLLATE "C"    NOT NULL,                  -- YYYY-MM-DDTHH, UTC
  bytes    bigint  NOT NULL
);

-- Tasks per status, kept in the same transaction as the tasks they count.
CREATE TABLE task_status_counts (
  status text COLLATE "C"   PRIMARY KEY,
  count  bigint NOT NULL
);

CREATE FUNCTION swarm_count_task_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE task_status_counts SET count = count - 1 WHERE status = OLD.status;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO task_status_counts (status, count) VALUES (NEW.status, 1)
      ON CONFLICT (status) DO UPDATE SET count = task_status_counts.count + 1;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER task_status_counts_insert_delete AFTER INSERT OR DELETE ON tasks
  FOR EACH ROW EXECUTE FUNCTION swarm_count_task_status();
CREATE TRIGGER task_status_counts_update AFTER UPDATE OF status ON tasks
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION swarm_count_task_status();

-- Each agent's record: one row, whatever its history. Bids count once their round closed.
CREATE TABLE agent_stats (
  agent_id        text COLLATE "C"   PRIMARY KEY,
  bids            bigint NOT NULL DEFAULT 0,
  wins            bigint NOT NULL DEFAULT 0,
  won_sats        bigint NOT NULL DEFAULT 0,
  tasks_completed bigint NOT NULL DEFAULT 0,
  tasks_failed    bigint NOT NULL DEFAULT 0,
  earned_sats     bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION swarm_count_bid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.outcome IS NOT NULL THEN
    UPDATE agent_stats SET bids = bids - 1, wins = wins - (OLD.outcome = 'won')::int,
      won_sats = won_sats - CASE WHEN OLD.outcome = 'won' THEN OLD.bid_sats ELSE 0 END
      WHERE agent_id = OLD.agent_id;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.outcome IS NOT NULL THEN
    INSERT INTO agent_stats (agent_id, bids, wins, won_sats)
      VALUES (NEW.agent_id, 1, (NEW.outcome = 'won')::int, CASE WHEN NEW.outcome = 'won' THEN NEW.bid_sats ELSE 0 END)
      ON CONFLICT (agent_id) DO UPDATE SET bids = agent_stats.bids + 1,
        wins = agent_stats.wins + excluded.wins, won_sats = agent_stats.won_sats + excluded.won_sats;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER agent_stats_bid_insert_delete AFTER INSERT OR DELETE ON bids
  FOR EACH ROW EXECUTE FUNCTION swarm_count_bid();
CREATE TRIGGER agent_stats_bid_update AFTER UPDATE OF outcome, bid_sats, agent_id ON bids
  FOR EACH ROW WHEN (
    (OLD.outcome IS NOT NULL OR NEW.outcome IS NOT NULL) AND
    (OLD.outcome IS DISTINCT FROM NEW.outcome OR OLD.bid_sats IS DISTINCT FROM NEW.bid_sats
      OR OLD.agent_id IS DISTINCT FROM NEW.agent_id)
  ) EXECUTE FUNCTION swarm_count_bid();

CREATE FUNCTION swarm_count_task_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.assigned_agent IS NOT NULL AND OLD.status IN ('completed', 'failed') THEN
    UPDATE agent_stats SET tasks_completed = tasks_completed - (OLD.status = 'completed')::int,
      tasks_failed = tasks_failed - (OLD.status = 'failed')::int,
      earned_sats = earned_sats - CASE WHEN OLD.status = 'completed' THEN COALESCE(OLD.winning_bid_sats, 0) ELSE 0 END
      WHERE agent_id = OLD.assigned_agent;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.assigned_agent IS NOT NULL AND NEW.status IN ('completed', 'failed') THEN
    INSERT INTO agent_stats (agent_id, tasks_completed, tasks_failed, earned_sats)
      VALUES (NEW.assigned_agent, (NEW.status = 'completed')::int, (NEW.status = 'failed')::int,
        CASE WHEN NEW.status = 'completed' THEN COALESCE(NEW.winning_bid_sats, 0) ELSE 0 END)
      ON CONFLICT (agent_id) DO UPDATE SET tasks_completed = agent_stats.tasks_completed + excluded.tasks_completed,
        tasks_failed = agent_stats.tasks_failed + excluded.tasks_failed,
        earned_sats = agent_stats.earned_sats + excluded.earned_sats;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER agent_stats_task_insert_delete AFTER INSERT OR DELETE ON tasks
  FOR EACH ROW EXECUTE FUNCTION swarm_count_task_outcome();
CREATE TRIGGER agent_stats_task_update AFTER UPDATE OF status, assigned_agent, winning_bid_sats ON tasks
  FOR EACH ROW WHEN (
    (OLD.assigned_agent IS NOT NULL AND OLD.status IN ('completed', 'failed')) OR
    (NEW.assigned_agent IS NOT NULL AND NEW.status IN ('completed', 'failed'))
  ) EXECUTE FUNCTION swarm_count_task_outcome();
