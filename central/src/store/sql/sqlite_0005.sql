-- v0.2 approval: `held` and `approved` are open states too.
DROP INDEX IF EXISTS commands_open_by_node;
CREATE INDEX commands_open_by_node ON commands (node_id, created_at)
    WHERE state IN ('queued', 'sent', 'held', 'approved');
-- The approval request of a command that needs one (requester, approvers,
-- count, reason, digest, expiry, who approved so far).
ALTER TABLE commands ADD COLUMN approval TEXT;
-- People: an API token belongs to a user (NULL: the token's name), and
-- users belong to groups (an approval may name a group).
ALTER TABLE api_tokens ADD COLUMN user_name TEXT;
CREATE TABLE user_groups (
    user_name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_name, group_name)
);
