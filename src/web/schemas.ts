/**
 * One schema per body, params, query and response: Fastify validates with it, TypeScript
 * infers from it, and @fastify/swagger publishes it as OpenAPI. JSON fields are snake_case.
 */
import { Type, type Static, type TProperties, type TSchema } from "typebox";
import type { TASK_STATUSES } from "../coordinator/types.js";
import { KNOWN_EVENT_TYPES } from "../event-log/event-types.js";

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const Timestamp = Type.String({ description: "ISO-8601 UTC with milliseconds" });
const Withheld = Type.Array(Type.String(), {
  description:
    "Fields removed because this reader may not see them (another agent's tool input, a task's result); absent when nothing was",
});
const Capabilities = Type.Array(Type.String({ minLength: 1, maxLength: 50 }), { maxItems: 50 });

export const ErrorSchema = Type.Object({
  error: Type.Object({
    code: Type.String({ description: "Stable, UPPER_SNAKE; see the README's table" }),
    message: Type.String(),
    details: Type.Optional(Type.Object({}, { additionalProperties: true })),
  }),
});

export const AgentStatsSchema = Type.Object({
  bids: Type.Integer(),
  wins: Type.Integer(),
  tasks_completed: Type.Integer(),
  tasks_failed: Type.Integer(),
  earned_sats: Type.Integer(),
  win_rate: Type.Number(),
  average_winning_bid_sats: Nullable(Type.Integer()),
});

export const AgentStatusSchema = Type.Union([
  Type.Literal("idle"),
  Type.Literal("busy"),
  Type.Literal("offline"),
]);

export const AgentSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  status: AgentStatusSchema,
  capabilities: Type.Array(Type.String()),
  max_concurrent: Type.Integer(),
  registered_at: Timestamp,
  last_seen: Timestamp,
  left_at: Nullable(Timestamp),
  stats: AgentStatsSchema,
  runs: Type.Object(
    { completed: Type.Integer(), failed: Type.Integer(), timed_out: Type.Integer() },
    { description: "What its runs came to, as the award rule best_value weighs them" },
  ),
  reliability: Type.Number({
    description:
      "(completed + 4) / (completed + failed + 2 × timed_out + 5): what best_value divides a bid by",
  }),
  stream: Type.Union([Type.Literal("listening"), Type.Literal("lost"), Type.Literal("none")], {
    description:
      "listening: its stream is open; lost: it had one and it is gone (heartbeating without it: a zombie, not waited for by an early close); none: it never opened one",
  }),
});
export type AgentView = Static<typeof AgentSchema>;

export const TaskStatusSchema = Type.Union([
  Type.Literal("waiting"),
  Type.Literal("bidding"),
  Type.Literal("assigned"),
  Type.Literal("running"),
  Type.Literal("completed"),
  Type.Literal("failed"),
  Type.Literal("cancelled"),
]);
// The schema and the core's list of statuses must not drift apart.
const _sameStatuses: (typeof TASK_STATUSES)[number] extends Static<typeof TaskStatusSchema> ? true : never =
  true;

export const TaskSchema = Type.Object({
  id: Type.String(),
  description: Type.String(),
  status: TaskStatusSchema,
  required_capabilities: Type.Array(Type.String()),
  auction_ms: Type.Integer(),
  max_bid_sats: Nullable(Type.Integer()),
  award: Type.Union([Type.Literal("lowest"), Type.Literal("best_value")]),
  attempt: Type.Integer({
    description:
      "Auction round: 1, then one more each time the task goes up again (a retry, an agent lost, an award that lapsed); bids and awards are per round",
  }),
  releases: Type.Integer({
    description:
      "Rounds that ended with the agent handing the task back (task.released); never charged as attempts",
  }),
  ack_ms: Nullable(
    Type.Integer({
      description: "How long the winner has to start after task.assigned before the award passes on",
    }),
  ),
  timeout_ms: Nullable(
    Type.Integer({ description: "How long a run may take after task.started before it times out" }),
  ),
  max_attempts: Type.Integer({ description: "Attempts the task gets; a failed one is retried until then" }),
  retry_backoff_ms: Type.Integer({
    description: "Delay before the first retry, doubling for each one after",
  }),
  failures: Type.Integer({
    description: "Attempts that failed so far (reported, timed out, agent lost, award lapsed)",
  }),
  failed_agents: Type.Array(Type.String(), {
    description: "Agents that failed an attempt of this task; their bids rank after everyone else's",
  }),
  declined_agents: Type.Array(Type.String(), {
    description: "Agents whose award of the current round lapsed unacknowledged",
  }),
  opens_at: Nullable(Timestamp),
  due_at: Nullable(
    Type.String({
      description:
        "ISO-8601 UTC: when the task's next timed step is due (its auction closing, its award lapsing, its run timing out, its retry opening)",
    }),
  ),
  depends_on: Type.Array(Type.String(), {
    description: "Tasks that must complete before this one's auction opens",
  }),
  waiting_on: Type.Array(Type.String(), {
    description: "Those of depends_on not completed yet; the task is waiting while any is left",
  }),
  retry_of: Nullable(Type.String({ description: "The failed or cancelled task this one runs again" })),
  retried_by: Nullable(Type.String({ description: "The task that runs this one again" })),
  schedule_id: Nullable(Type.String({ description: "The schedule whose firing posted this task" })),
  assigned_agent: Nullable(Type.String()),
  winning_bid_sats: Nullable(Type.Integer()),
  result: Nullable(Type.String()),
  error: Nullable(Type.String()),
  created_at: Timestamp,
  auction_closes_at: Nullable(Timestamp),
  assigned_at: Nullable(Timestamp),
  started_at: Nullable(Timestamp),
  completed_at: Nullable(Timestamp),
  withheld: Type.Optional(Withheld),
});

export const BidSchema = Type.Object({
  task_id: Type.String(),
  attempt: Type.Integer(),
  agent_id: Type.String(),
  bid_sats: Type.Integer(),
  placed_at: Timestamp,
  outcome: Nullable(Type.Union([Type.Literal("won"), Type.Literal("lost")])),
});

export const EventSchema = Type.Object({
  seq: Type.Integer(),
  id: Type.String(),
  event_type: Type.String({
    description: `One of the types the product writes (${KNOWN_EVENT_TYPES.join(", ")}), or a user's own dotted lower-case name`,
  }),
  source: Type.String(),
  task_id: Nullable(Type.String()),
  agent_id: Nullable(Type.String()),
  data: Type.Object({}, { additionalProperties: true }),
  timestamp: Timestamp,
  withheld: Type.Optional(Withheld),
});

export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }) });

export const RegisterAgentBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    capabilities: Type.Optional(Capabilities),
    max_concurrent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
);

export const PostTaskBody = Type.Object(
  {
    description: Type.String({ minLength: 1, maxLength: 10_000 }),
    required_capabilities: Type.Optional(Capabilities),
    auction_ms: Type.Optional(Type.Integer({ description: "Auction window, 100 ms to 10 min" })),
    max_bid_sats: Type.Optional(Type.Integer({ description: "This task's cap on bids" })),
    award: Type.Optional(
      Type.Union([Type.Literal("lowest"), Type.Literal("best_value")], {
        description:
          "lowest (default): the lowest bid wins; best_value: the lowest bid_sats / reliability of its bidder, every score in auction.closed",
      }),
    ),
    ack_ms: Type.Optional(
      Type.Integer({
        description:
          "How long the winner has to start after task.assigned (default SWARM_ACK_MS); then the award passes to the next bid",
      }),
    ),
    timeout_ms: Type.Optional(
      Type.Integer({
        description: "How long a run may take after task.started; then it times out (default: no limit)",
      }),
    ),
    max_attempts: Type.Optional(
      Type.Integer({
        description: "Attempts the task gets: a failed or timed-out one is retried until then (default 1)",
      }),
    ),
    retry_backoff_ms: Type.Optional(
      Type.Integer({
        description: "Delay before the first retry, doubling for each one after, capped (default 0: at once)",
      }),
    ),
    assign_to: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description:
          "Skip the auction: give the task to this agent, which must be online, capable and below capacity",
      }),
    ),
    depends_on: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 200 }), {
        maxItems: 100,
        description:
          "Tasks that must complete first: the task waits (status waiting) and opens its auction once the last has completed; if one fails for good or is cancelled, it is cancelled naming it",
      }),
    ),
  },
  { additionalProperties: false },
);

export const AssignBody = Type.Object(
  { agent_id: Type.String({ minLength: 1, maxLength: 200 }) },
  { additionalProperties: false },
);

export const BidBody = Type.Object({ bid_sats: Type.Integer() }, { additionalProperties: false });
export const CompleteBody = Type.Object(
  { result: Type.Optional(Type.String({ maxLength: 100_000 })) },
  { additionalProperties: false },
);
export const ReasonBody = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 10_000 })) },
  { additionalProperties: false },
);
export const ReleaseBody = Type.Object(
  {
    reason: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1000,
        description: "Why the agent hands the task back, e.g. that it is stopping; shown with task.released",
      }),
    ),
  },
  { additionalProperties: false },
);
export const ToolBody = Type.Object(
  {
    tool: Type.String({ minLength: 1, maxLength: 100 }),
    phase: Type.Union([Type.Literal("called"), Type.Literal("completed"), Type.Literal("failed")]),
    call_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    input: Type.Optional(Type.Unknown()),
    output: Type.Optional(Type.Unknown()),
    error: Type.Optional(Type.String({ minLength: 1, maxLength: 10_000 })),
  },
  { additionalProperties: false },
);

/**
 * A query string that takes only the parameters it names. One it does not know is refused by
 * name (400 INVALID_FILTER, see app.ts) rather than ignored: `?event_typ=task.created` must not
 * answer every event as if no filter had been asked for.
 */
export const StrictQuery = <T extends TProperties>(properties: T) =>
  Type.Object(properties, { additionalProperties: false });

/** For reads that take no query parameters at all, so that a filter sent to them is not ignored. */
export const NoQuery = StrictQuery({});

/** A list's `cursor` parameter: the `next_cursor` of the page before. */
const Cursor = (pattern: string) =>
  Type.Optional(Type.String({ pattern, description: "next_cursor of the previous page" }));

export const TaskListQuery = StrictQuery({
  status: Type.Optional(TaskStatusSchema),
  agent_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Cursor("^[0-9]{1,15}$"),
});

const EventTypesParameter = (description: string) =>
  Type.Optional(
    Type.Union(
      [Type.String({ maxLength: 2000 }), Type.Array(Type.String({ maxLength: 200 }), { maxItems: 50 })],
      { description },
    ),
  );

/**
 * The event filters, shared by the list, the export and the stream. `event_type` is the
 * Python-era name of `type`: the validator folds it into `type` (see app.ts), so handlers only
 * ever read `type`; a query with both is refused.
 */
export const EventFilterQuery = StrictQuery({
  type: EventTypesParameter("One type, several comma-separated, or the parameter repeated"),
  event_type: EventTypesParameter("The Python-era name of type, taken the same way; not together with type"),
  source: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  task_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  agent_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  since: Type.Optional(Type.String({ maxLength: 40, description: "ISO-8601, inclusive" })),
  until: Type.Optional(Type.String({ maxLength: 40, description: "ISO-8601, exclusive" })),
  q: Type.Optional(
    Type.String({ minLength: 1, maxLength: 200, description: "Text to find in the event data" }),
  ),
});

/**
 * A position in the event log, as text in a query string. Bounded so that a number too large
 * to be exact (1e40) is refused here by name, not by the store later.
 */
export const SeqQuery = (minimum = 0) =>
  Type.Optional(Type.Integer({ minimum, maximum: Number.MAX_SAFE_INTEGER }));

export const AgentListQuery = StrictQuery({
  status: Type.Optional(AgentStatusSchema),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Cursor("^[0-9]{1,15}$"),
});

export const TaskEventsQuery = StrictQuery({
  after_seq: SeqQuery(),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
});

/** A bid's place in a task's list of bids: its round, a dot, its agent's id. */
export const BID_CURSOR_PATTERN = "^[0-9]{1,9}\\.[\\x21-\\x7e]{1,200}$";

export const BidListQuery = StrictQuery({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  cursor: Cursor(BID_CURSOR_PATTERN),
});

export const EventListQuery = StrictQuery({
  ...EventFilterQuery.properties,
  after_seq: SeqQuery(),
  before_seq: SeqQuery(),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  order: Type.Optional(Type.Union([Type.Literal("asc"), Type.Literal("desc")])),
});

export const ExportQuery = StrictQuery({
  ...EventFilterQuery.properties,
  format: Type.Optional(Type.Union([Type.Literal("ndjson"), Type.Literal("csv")])),
});

export const StreamQuery = StrictQuery({
  after_seq: SeqQuery(),
  type: EventFilterQuery.properties.type,
  event_type: EventFilterQuery.properties.event_type,
  task_id: EventFilterQuery.properties.task_id,
  agent_id: EventFilterQuery.properties.agent_id,
  token: Type.Optional(
    Type.String({ maxLength: 200, description: "Credentials, for clients that cannot set headers" }),
  ),
});

export const SummaryQuery = StrictQuery({
  minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: 43_200, default: 60 })),
});

/** The documented error responses, for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, typeof ErrorSchema> {
  return Object.fromEntries(statuses.map((status) => [status, ErrorSchema]));
}
