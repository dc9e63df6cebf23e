-- Several coordinator replicas on one database: who is running, and who holds the lease for the
-- jobs that must run on one replica at a time (retention, the hourly rollup). Times here are the
-- database's own (timestamptz, from now()), so replicas with skewed clocks still agree.

CREATE TABLE coordinator_replicas (
  id          text COLLATE "C" PRIMARY KEY,
  host        text COLLATE "C" NOT NULL,
  pid         integer NOT NULL,
  url         text COLLATE "C",
  started_at  timestamptz NOT NULL DEFAULT now(),
  last_seen   timestamptz NOT NULL DEFAULT now(),
  stopped_at  timestamptz                          -- left cleanly; a crashed replica just goes quiet
);

-- One row per lease; `term` grows each time the lease changes hands (the holder logs the term
-- it took). The jobs under it are safe to overlap: a holder paused past its expiry that finishes
-- a job it had begun does no harm, only work another replica repeats.
CREATE TABLE coordinator_leases (
  name        text COLLATE "C" PRIMARY KEY,
  holder      text COLLATE "C" NOT NULL,
  term        bigint NOT NULL,
  acquired_at timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL
);

-- Agents past their heartbeat: what a Tick on any replica looks for.
CREATE INDEX idx_agents_seen ON agents (last_seen) WHERE left_at IS NULL;
