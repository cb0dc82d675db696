-- Telemetry natively range-partitioned by day. A default partition catches
-- rows outside the partitions made so far, so no insert ever fails for lack
-- of one; the maintenance job makes tomorrow's and drops those past retention.
CREATE TABLE telemetry (
    node_id UUID NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    cpu DOUBLE PRECISION NOT NULL,
    memory DOUBLE PRECISION NOT NULL,
    disk DOUBLE PRECISION NOT NULL,
    data JSONB NOT NULL,
    PRIMARY KEY (node_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;
INSERT INTO settings (key, value) VALUES ('telemetry_mode', 'partitioned');
