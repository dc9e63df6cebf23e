-- The event log: every lifecycle event of the swarm, in commit order.
-- seq is the global cursor for pagination and live resume. AUTOINCREMENT keeps it from
-- ever being reused, even after the newest rows are pruned.
CREATE TABLE event_log (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  id         TEXT    NOT NULL UNIQUE,
  event_type TEXT    NOT NULL,
  source     TEXT    NOT NULL,
  task_id    TEXT,
  agent_id   TEXT,
  data       TEXT,
  timestamp  TEXT    NOT NULL
);

-- One index per filter the queries make, each ending in seq so that a filtered page comes
-- out of the index already in cursor order.
CREATE INDEX idx_event_log_task   ON event_log (task_id, seq);
CREATE INDEX idx_event_log_agent  ON event_log (agent_id, seq);
CREATE INDEX idx_event_log_type   ON event_log (event_type, seq);
CREATE INDEX idx_event_log_source ON event_log (source, seq);
-- Time windows, pruning and the summary; event_type makes the summary an index-only read.
CREATE INDEX idx_event_log_time   ON event_log (timestamp, event_type);

-- Counts per type per hour of every event up to rolled_up_to_seq. A rollup folds new events
-- in every few minutes and always before a prune, so pruning never loses a count and long-term
-- charts outlive retention; writes pay nothing for it.
CREATE TABLE event_counts_hourly (
  hour       TEXT    NOT NULL,
  event_type TEXT    NOT NULL,
  count      INTEGER NOT NULL,
  PRIMARY KEY (hour, event_type)
) WITHOUT ROWID;

CREATE TABLE event_rollup_state (
  id               INTEGER PRIMARY KEY CHECK (id = 1),
  rolled_up_to_seq INTEGER NOT NULL
);
INSERT INTO event_rollup_state (id, rolled_up_to_seq) VALUES (1, 0);
