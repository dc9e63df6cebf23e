-- The lease names the process that holds it besides the replica's name: two processes started
-- with the same SWARM_REPLICA_ID (a template copied to every host) would otherwise both renew
-- one lease and both run the singleton jobs. The name is what /healthz shows; the process token
-- is what renews.
ALTER TABLE coordinator_leases ADD COLUMN holder_process text COLLATE "C" NOT NULL DEFAULT '';
