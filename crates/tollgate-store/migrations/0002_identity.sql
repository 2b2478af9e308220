-- Identity: trusted JWT issuers (configuration), organizations (tenants),
-- users and memberships, apps with their API keys and OAuth clients, the
-- OAuth server's signing keys and revoked tokens, and the change feed that
-- gateway nodes replicate from. Same conventions as 0001: prefixed ULIDs in
-- TEXT, unix milliseconds in BIGINT (except revoked_tokens.expires_at, unix
-- seconds like a JWT's `exp`), JSON in TEXT, hashes as lower-case hex TEXT.
--
-- Every tenant table carries org_id (denormalized on keys and clients), so
-- every tenant query filters on it. Keys and clients reference their app by
-- (org_id, app_id): the database itself refuses a key whose org is not its
-- app's org.

CREATE TABLE jwt_issuers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- `email` is stored lower-cased, so UNIQUE is case-insensitive.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user_id ON memberships (user_id);

CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name),
    -- The target of the credentials' (org_id, app_id) foreign keys.
    UNIQUE (org_id, id)
);

-- `key_hash` is the hex SHA-256-class digest of the key; the key itself is
-- never stored. `rotated_from` is the key this one replaced.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    name TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    key_hash TEXT NOT NULL UNIQUE,
    display_prefix TEXT NOT NULL,
    scopes TEXT NOT NULL,
    metadata TEXT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT,
    rotated_from TEXT,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (org_id, app_id) REFERENCES apps (org_id, id) ON DELETE CASCADE
);
CREATE INDEX api_keys_org_app ON api_keys (org_id, app_id, id);

-- `scopes` are the scopes the client may request; `secret_hash` is an
-- argon2 PHC string.
CREATE TABLE oauth_clients (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    FOREIGN KEY (org_id, app_id) REFERENCES apps (org_id, id) ON DELETE CASCADE
);
CREATE INDEX oauth_clients_org_app ON oauth_clients (org_id, app_id, id);

-- The OAuth server's token signing keys. `private_key` is base64 PKCS#8.
-- A retired key no longer signs; it stays in the JWKS until `expires_at`.
CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    expires_at BIGINT
);

-- Access tokens revoked before their expiry (RFC 7009), kept until `expires_at`
-- (unix seconds), after which the token is refused anyway.
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- The change feed. Sequence numbers come from the counter row below rather
-- than an auto-increment column: every writer locks the row first and
-- updates it in its own transaction, so changes become visible strictly in
-- sequence order and a reader that has seen `seq` never misses a smaller one
-- committed later (which BIGSERIAL would allow).
CREATE TABLE identity_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO identity_seq (id, seq) VALUES (1, 0);

-- `entity` is 'key', 'client', 'signing_key' or 'token' (then `entity_id`
-- is the token's jti).
CREATE TABLE identity_changes (
    seq BIGINT PRIMARY KEY,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Small installation-wide values (a generated pepper id, the issuer URL...).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
