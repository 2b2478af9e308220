-- Traffic control: plans (configuration, stored like jwt_issuers),
-- organizations' time zones, subscriptions (tenant data, replicated to
-- gateways through the identity change feed) and the usage counters that
-- gateways persist. Same conventions as 0001 and 0002.

CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- An IANA time zone name; NULL means UTC. Monthly quotas follow it.
ALTER TABLE organizations ADD COLUMN timezone TEXT;

-- The target of the subscriptions' (org_id, app_id, key_id) foreign key. It
-- replaces 0002's plain index on the same columns.
CREATE UNIQUE INDEX api_keys_org_app_id ON api_keys (org_id, app_id, id);
DROP INDEX api_keys_org_app;

-- A subscription binds an organization (app_id and key_id NULL), one of its
-- apps (key_id NULL) or one of that app's keys to a plan, for one API
-- (`api`, a service name) or every API (`api` NULL). `overrides` is a JSON
-- object of plan limits that replace the plan's.
--
-- The composite foreign keys make a cross-tenant row impossible: the app
-- must be the organization's and the key the app's. (A foreign key with a
-- NULL column is not checked, so the CHECK forbids a key without its app.)
-- Deleting an organization, app or key removes its subscriptions; deleting
-- a plan that is subscribed to is refused.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    app_id TEXT,
    key_id TEXT,
    plan TEXT NOT NULL REFERENCES plans (name),
    api TEXT,
    overrides TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (key_id IS NULL OR app_id IS NOT NULL),
    FOREIGN KEY (org_id, app_id) REFERENCES apps (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, app_id, key_id) REFERENCES api_keys (org_id, app_id, id)
        ON DELETE CASCADE
);
-- At most one subscription per (organization, app, key, API). NULLs are
-- distinct in a unique index on both databases, so the index is on '' in
-- their place (no id or service name is empty).
CREATE UNIQUE INDEX subscriptions_target ON subscriptions
    (org_id, COALESCE(app_id, ''), COALESCE(key_id, ''), COALESCE(api, ''));
CREATE INDEX subscriptions_org_id ON subscriptions (org_id, id);
CREATE INDEX subscriptions_plan ON subscriptions (plan);

-- Quota counts that gateways persist: `count` requests of `counter` (a
-- quota's name) by `subject` (who is counted) in the period starting at
-- `period_start` (unix ms). Gateways add deltas; nothing else writes here.
CREATE TABLE usage_counters (
    subject TEXT NOT NULL,
    counter TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (subject, counter, period_start)
);
CREATE INDEX usage_counters_period_start ON usage_counters (period_start);
