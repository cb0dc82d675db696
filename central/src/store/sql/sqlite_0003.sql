-- Health reports and alerts are acked and may arrive more than once: each
-- is kept once, a health report by (node, its timestamp), an alert by its id.
DELETE FROM health WHERE id NOT IN (SELECT MIN(id) FROM health GROUP BY node_id, at);
DROP INDEX IF EXISTS health_node_at;
CREATE UNIQUE INDEX health_node_at ON health (node_id, at);
ALTER TABLE alerts ADD COLUMN alert_id TEXT;
CREATE UNIQUE INDEX alerts_alert_id ON alerts (alert_id);
