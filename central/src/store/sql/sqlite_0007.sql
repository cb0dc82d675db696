-- v0.3 with v0.2: the approval request of a rollout that needs one
-- (requester, approvers, count, reason, digest, expiry, who approved so far).
ALTER TABLE rollouts ADD COLUMN approval TEXT;
-- The driver reads the rollouts not ended every tick; ended ones pile up.
CREATE INDEX rollouts_by_state ON rollouts (state, created_at);
