-- Node token ids spent at admission or refresh, kept while their token could
-- still be presented (its expiry plus the allowed skew): a token used once is
-- refused again after a restart and at every process sharing this store.
CREATE TABLE spent_tokens (
    jti UUID PRIMARY KEY,
    node_id UUID NOT NULL,
    keep_until TIMESTAMPTZ NOT NULL
);
CREATE INDEX spent_tokens_keep_until ON spent_tokens (keep_until);
