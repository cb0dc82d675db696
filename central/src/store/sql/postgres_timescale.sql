-- Telemetry as a TimescaleDB hypertable: daily chunks, compressed after
-- 7 days, dropped after 90, with a per-minute continuous aggregate.
CREATE TABLE telemetry (
    node_id UUID NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    cpu DOUBLE PRECISION NOT NULL,
    memory DOUBLE PRECISION NOT NULL,
    disk DOUBLE PRECISION NOT NULL,
    data JSONB NOT NULL,
    PRIMARY KEY (node_id, ts)
);
SELECT create_hypertable('telemetry', 'ts', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE telemetry SET (timescaledb.compress, timescaledb.compress_segmentby = 'node_id', timescaledb.compress_orderby = 'ts');
SELECT add_compression_policy('telemetry', INTERVAL '7 days');
SELECT add_retention_policy('telemetry', INTERVAL '90 days');
CREATE MATERIALIZED VIEW telemetry_1m WITH (timescaledb.continuous) AS
    SELECT node_id, time_bucket(INTERVAL '1 minute', ts) AS bucket,
           avg(cpu) AS cpu, avg(memory) AS memory, avg(disk) AS disk, count(*) AS samples
    FROM telemetry GROUP BY node_id, bucket WITH NO DATA;
SELECT add_continuous_aggregate_policy('telemetry_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
INSERT INTO settings (key, value) VALUES ('telemetry_mode', 'timescaledb');
