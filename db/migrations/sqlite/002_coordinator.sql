-- The coordinator's state. Every change to these tables is written in the same transaction as
-- the events that describe it, so state and event_log never disagree.

CREATE TABLE agents (
  id             TEXT    PRIMARY KEY,
  name           TEXT    NOT NULL,
  capabilities   TEXT    NOT NULL,            -- JSON array of lower-case names
  max_concurrent INTEGER NOT NULL CHECK (max_concurrent >= 1),
  status         TEXT    NOT NULL CHECK (status IN ('idle', 'busy', 'offline')),
  registered_at  TEXT    NOT NULL,
  last_seen      TEXT    NOT NULL,
  grace_until    TEXT,                        -- offline since a restart, not yet lost
  left_at        TEXT                         -- deregistered
);

CREATE TABLE tasks (
  id                    TEXT    PRIMARY KEY,
  description           TEXT    NOT NULL,
  status                TEXT    NOT NULL
                        CHECK (status IN ('bidding', 'assigned', 'running', 'completed', 'failed', 'cancelled')),
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
  completed_at          TEXT
);
-- Loading the working set at start, and listing tasks by status newest first.
CREATE INDEX idx_tasks_status ON tasks (status, created_at);
-- An agent's tasks and its completed/failed counts.
CREATE INDEX idx_tasks_agent ON tasks (assigned_agent, status);
CREATE INDEX idx_tasks_created ON tasks (created_at);

-- One live bid per agent per auction round; a new bid from the same agent replaces its row.
CREATE TABLE bids (
  task_id   TEXT    NOT NULL REFERENCES tasks (id),
  attempt   INTEGER NOT NULL,
  agent_id  TEXT    NOT NULL REFERENCES agents (id),
  bid_sats  INTEGER NOT NULL CHECK (bid_sats >= 1),
  bid_order INTEGER NOT NULL,
  placed_at TEXT    NOT NULL,
  outcome   TEXT    CHECK (outcome IN ('won', 'lost')),
  PRIMARY KEY (task_id, attempt, agent_id)
) WITHOUT ROWID;
-- An agent's bids and wins, for its stats.
CREATE INDEX idx_bids_agent ON bids (agent_id, outcome);
