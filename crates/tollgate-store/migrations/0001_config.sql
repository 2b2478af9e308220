-- Tollgate configuration store, portable SQL for SQLite and PostgreSQL.
-- Ids are prefixed ULIDs in TEXT, timestamps are unix milliseconds in BIGINT,
-- and specs are JSON documents in TEXT (the model owns their shape, not SQL).

-- A single counter bumped by every configuration write, so that nodes can
-- poll one cheap row to learn that they must rebuild their snapshot.
CREATE TABLE config_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO config_revision (id, revision) VALUES (1, 0);

CREATE TABLE services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE routes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    service_id TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX routes_service_id ON routes (service_id, id);

-- `name` is the policy type (`cors`, ...). `scope_key` is 'global', the
-- service id or the route id: NULLs are distinct in UNIQUE constraints on both
-- databases, so uniqueness per scope needs a NOT NULL key.
CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    service_id TEXT REFERENCES services (id) ON DELETE CASCADE,
    route_id TEXT REFERENCES routes (id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (service_id IS NULL OR route_id IS NULL),
    CHECK (scope_key = COALESCE(service_id, route_id, 'global')),
    UNIQUE (name, scope_key)
);
CREATE INDEX policies_scope_key ON policies (scope_key, id);
CREATE INDEX policies_service_id ON policies (service_id);
CREATE INDEX policies_route_id ON policies (route_id);

CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
