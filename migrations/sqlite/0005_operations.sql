-- Operations at scale: audit paging and search, and a row for write probes.

-- The audit API pages newest first by id, filtered by user or kind.
DROP INDEX audit_events_user;
DROP INDEX audit_events_kind;
CREATE INDEX audit_events_user_id ON audit_events (user_id, id);
CREATE INDEX audit_events_kind_id ON audit_events (kind, id);

-- While the database is marked unavailable after failed writes (disk full, read-only), the
-- server probes with a write to this one row until one succeeds.
CREATE TABLE write_probes (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL
);
