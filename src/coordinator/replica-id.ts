import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

/**
 * A replica's name when SWARM_REPLICA_ID gives none: the host and pid say where to look, the
 * random suffix keeps two containers that both run as pid 1 on hosts of one name apart.
 */
export function defaultReplicaId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(2).toString("hex")}`;
}
