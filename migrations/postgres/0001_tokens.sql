-- Token registrations. Timestamps are Unix milliseconds. The hash is the only trace of a token.
CREATE TABLE tokens (
    id              TEXT   PRIMARY KEY,
    hash            TEXT   NOT NULL UNIQUE,
    name            TEXT   NOT NULL,
    scopes          TEXT   NOT NULL,
    owner_cluster   TEXT   NOT NULL,
    owner_namespace TEXT   NOT NULL,
    owner_name      TEXT   NOT NULL,
    owner_uid       TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    last_used_at    BIGINT,
    use_count       BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX tokens_owner_uid ON tokens (owner_uid);
CREATE INDEX tokens_owner_namespace ON tokens (owner_namespace);
