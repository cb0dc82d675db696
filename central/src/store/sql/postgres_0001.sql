-- NAP central, schema version 1 (PostgreSQL). The telemetry table is created
-- separately: a TimescaleDB hypertable when the extension exists, a natively
-- range-partitioned table otherwise.
CREATE TABLE nodes (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    public_key_pem TEXT NOT NULL,
    labels JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    status TEXT,
    last_seen TIMESTAMPTZ,
    agent_version TEXT
);

CREATE TABLE health (
    id BIGSERIAL PRIMARY KEY,
    node_id UUID NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    overall TEXT NOT NULL,
    report JSONB NOT NULL
);
CREATE INDEX health_node_at ON health (node_id, at);

CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    node_id UUID NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    severity TEXT NOT NULL,
    body JSONB NOT NULL
);
CREATE INDEX alerts_at ON alerts (at);

CREATE TABLE status_history (
    id BIGSERIAL PRIMARY KEY,
    node_id UUID NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    status TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX status_history_node ON status_history (node_id, at);

CREATE TABLE commands (
    request_id UUID PRIMARY KEY,
    node_id UUID NOT NULL,
    kind TEXT NOT NULL,
    message JSONB NOT NULL,
    state TEXT NOT NULL,
    requester TEXT NOT NULL,
    approver TEXT,
    timeout_ms BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    result JSONB
);
CREATE INDEX commands_open ON commands (state, created_at);

CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail JSONB NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE api_tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    detail JSONB NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
