-- The audit trail: one row per change of a registration, written in the transaction of the
-- change. Append-only (the triggers refuse updates and deletes). Never a token or a hash.
-- Times are Unix milliseconds; scopes are space-joined, as in `tokens`.
CREATE TABLE token_events (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id          TEXT    NOT NULL,
    owner_cluster     TEXT    NOT NULL,
    owner_namespace   TEXT    NOT NULL,
    owner_name        TEXT    NOT NULL,
    owner_uid         TEXT    NOT NULL,
    at                INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    generation        INTEGER,
    before_name       TEXT,
    before_scopes     TEXT,
    before_expires_at INTEGER,
    after_name        TEXT,
    after_scopes      TEXT,
    after_expires_at  INTEGER
);

CREATE INDEX token_events_token ON token_events (token_id, id);
CREATE INDEX token_events_owner_uid ON token_events (owner_uid, id);

CREATE TRIGGER token_events_no_update BEFORE UPDATE ON token_events
BEGIN
    SELECT RAISE(ABORT, 'token_events is append-only');
END;

CREATE TRIGGER token_events_no_delete BEFORE DELETE ON token_events
BEGIN
    SELECT RAISE(ABORT, 'token_events is append-only');
END;
