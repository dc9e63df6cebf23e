-- The event log on PostgreSQL: the same columns as on SQLite, with text timestamps (ISO-8601,
-- UTC, milliseconds) so that text order is time order on both engines and an event reads back
-- exactly as it was written, and `data` kept as the JSON text written (not jsonb, which would
-- reorder keys and change what a text search matches).
--
-- `seq` is not a sequence: a sequence number is taken at insert and becomes visible at commit,
-- so a reader tailing `seq > after` could pass over a row that commits late. Appenders take
-- their numbers from the one row of event_log_head instead, in the statement that inserts the
-- events: its row lock is held until commit, so numbers are handed out in commit order, and a
-- rollback hands them back.
CREATE TABLE event_log_head (
  id       integer PRIMARY KEY CHECK (id = 1),
  last_seq bigint  NOT NULL
);
INSERT INTO event_log_head (id, last_seq) VALUES (1, 0);

CREATE TABLE event_log (
  seq        bigint PRIMARY KEY,
  id         text COLLATE "C"   NOT NULL UNIQUE,
  event_type text COLLATE "C"   NOT NULL,
  source     text COLLATE "C"   NOT NULL,
  task_id    text COLLATE "C",
  agent_id   text COLLATE "C",
  data       text COLLATE "C",
  timestamp  text COLLATE "C"   NOT NULL
);

CREATE INDEX idx_event_log_task   ON event_log (task_id, seq);
CREATE INDEX idx_event_log_agent  ON event_log (agent_id, seq);
CREATE INDEX idx_event_log_type   ON event_log (event_type, seq);
-- Agents' own events are found through the agent index; a read by source merges both halves.
CREATE INDEX idx_event_log_source ON event_log (source, seq) WHERE agent_id IS NULL OR source <> agent_id;
CREATE INDEX idx_event_log_time   ON event_log (timestamp, event_type);

-- Every text column compares byte by byte (COLLATE "C"), as SQLite's do, whatever the
-- database's own collation: ids, timestamps and names sort the same on both engines.

-- Text search (`q`) folds ASCII letters only, as SQLite's LIKE does, and matches the stored JSON
-- text anywhere: trigrams of the folded text answer `swarm_ascii_lower(data) LIKE …`. Folding in
-- SQL rather than with ILIKE keeps the answer the same in any locale or collation (ILIKE would
-- also fold É and é, and Turkish I to ı); the index's own statistics let the planner tell a
-- rare word (through the index) from a common one (the newest events first).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE FUNCTION swarm_ascii_lower(value text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN translate(value, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
CREATE INDEX idx_event_log_text ON event_log USING gin (swarm_ascii_lower(data) gin_trgm_ops);

CREATE TABLE event_counts_hourly (
  hour       text COLLATE "C"   NOT NULL,
  event_type text COLLATE "C"   NOT NULL,
  count      bigint NOT NULL,
  PRIMARY KEY (hour, event_type)
);

CREATE TABLE event_rollup_state (
  id               integer PRIMARY KEY CHECK (id = 1),
  rolled_up_to_seq bigint  NOT NULL
);
INSERT INTO event_rollup_state (id, rolled_up_to_seq) VALUES (1, 0);
