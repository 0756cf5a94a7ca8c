-- The audit trail: one row per change of a registration, written in the transaction of the
-- change. Append-only (the trigger refuses updates and deletes). Never a token or a hash.
-- Times are Unix milliseconds; scopes are space-joined, as in `tokens`. Writers take one
-- transaction-level advisory lock before writing (src/store/repo.rs), so ids are handed out in
-- commit order and a reader's cursor never skips an event committed after it read.
CREATE TABLE token_events (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_id          TEXT   NOT NULL,
    owner_cluster     TEXT   NOT NULL,
    owner_namespace   TEXT   NOT NULL,
    owner_name        TEXT   NOT NULL,
    owner_uid         TEXT   NOT NULL,
    at                BIGINT NOT NULL,
    kind              TEXT   NOT NULL,
    reason            TEXT   NOT NULL,
    generation        BIGINT,
    before_name       TEXT,
    before_scopes     TEXT,
    before_expires_at BIGINT,
    after_name        TEXT,
    after_scopes      TEXT,
    after_expires_at  BIGINT
);

CREATE INDEX token_events_token ON token_events (token_id, id);
CREATE INDEX token_events_owner_uid ON token_events (owner_uid, id);

CREATE FUNCTION token_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'token_events is append-only';
END;
$$;

CREATE TRIGGER token_events_append_only BEFORE UPDATE OR DELETE ON token_events
    FOR EACH ROW EXECUTE FUNCTION token_events_append_only();
