-- An agent's own events (its bids, starts, tool reports and results) carry its id as both
-- source and agent_id, so idx_event_log_agent already finds them in seq order. The source
-- index keeps only the other events (the coordinator's, the operator's, and any whose source
-- is not their agent): a bid then touches one index page fewer. A read by source asks each
-- index for its half and merges them by seq (queries.ts), so its answers are unchanged.
DROP INDEX idx_event_log_source;
CREATE INDEX idx_event_log_source ON event_log (source, seq) WHERE agent_id IS NULL OR source <> agent_id;
