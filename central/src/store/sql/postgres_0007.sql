-- v0.3 with v0.2: the approval request of a rollout that needs one
-- (requester, approvers, count, reason, digest, expiry, who approved so far).
ALTER TABLE rollouts ADD COLUMN approval JSONB;
