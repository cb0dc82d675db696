-- NAP central, schema version 1 (SQLite). Timestamps are Unix microseconds.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    public_key_pem TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    status TEXT,
    last_seen INTEGER,
    agent_version TEXT
);

CREATE TABLE telemetry (
    node_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    cpu REAL NOT NULL,
    memory REAL NOT NULL,
    disk REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (node_id, ts)
) WITHOUT ROWID;

CREATE TABLE health (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    overall TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX health_node_at ON health (node_id, at);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    severity TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alerts_at ON alerts (at);

CREATE TABLE status_history (
    node_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX status_history_node ON status_history (node_id, at);

CREATE TABLE commands (
    request_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    state TEXT NOT NULL,
    requester TEXT NOT NULL,
    approver TEXT,
    timeout_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    result TEXT
);
CREATE INDEX commands_open ON commands (state, created_at);

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE api_tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
