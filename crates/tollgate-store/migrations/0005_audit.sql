-- The audit log: one row per write through the admin API (later the portal
-- API). Same conventions as 0001: a prefixed ULID id (`aud_…`, so id order
-- is recording order), unix-millisecond BIGINT time, JSON in TEXT.
--
-- Append-only: the store has an INSERT and a SELECT for this table and no
-- UPDATE or DELETE. Rows are not configuration, so writing one does not bump
-- config_revision. `org_id` and `resource_id` have no foreign keys: an entry
-- outlives what it is about (deleting an organization must not delete the
-- record of its deletion).
--
-- (0004 is reserved for another change; sqlx applies a missing lower
-- version on the next start, so the two are independent.)
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    org_id TEXT,
    status INTEGER NOT NULL,
    before TEXT,
    after TEXT,
    ip TEXT,
    request_id TEXT NOT NULL
);
-- One index per filter, each ending in id so a filtered page is read in
-- id order straight from the index.
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_resource ON audit_log (resource_type, resource_id, id);
CREATE INDEX audit_log_org ON audit_log (org_id, id);
CREATE INDEX audit_log_status ON audit_log (status, id);
CREATE INDEX audit_log_at ON audit_log (at);
