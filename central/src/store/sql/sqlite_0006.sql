-- v0.3 rollouts: one command to many nodes under a strategy. The request
-- as given (the command, the strategy, the selector), the absolute numbers
-- it runs by, and its state.
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    message TEXT NOT NULL,
    strategy TEXT NOT NULL,
    limits TEXT NOT NULL,
    selector TEXT,
    state TEXT NOT NULL,
    start_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX rollouts_by_creation ON rollouts (created_at, id);
-- Its targets in order; each one's command has request_id once started.
CREATE TABLE rollout_targets (
    rollout_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, position)
);
CREATE UNIQUE INDEX rollout_targets_by_node ON rollout_targets (rollout_id, node_id);
CREATE UNIQUE INDEX rollout_targets_by_request ON rollout_targets (request_id);
