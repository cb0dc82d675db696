-- A central instance that takes a node loads that node's open commands.
CREATE INDEX commands_open_by_node ON commands (node_id, created_at)
    WHERE state IN ('queued', 'sent');
