-- Analytics roll-ups: one row per node, minute and (organization, app,
-- route, status class). A node keeps the full state of its recent minutes
-- and rewrites its own rows, so writes are idempotent; queries merge the
-- rows of every node. Absent ids are '' (not NULL) so the primary key holds.
-- `latency` and `upstream_latency` are encoded DDSketches (see
-- tollgate-analytics' sketch module), in microseconds.

CREATE TABLE analytics_rollups (
    node TEXT NOT NULL,
    bucket_start BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    route TEXT NOT NULL,
    status_class SMALLINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL,
    latency TEXT NOT NULL,
    upstream_latency TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (node, bucket_start, org_id, app_id, route, status_class)
);
CREATE INDEX analytics_rollups_time ON analytics_rollups (bucket_start);
CREATE INDEX analytics_rollups_org_time ON analytics_rollups (org_id, bucket_start);
