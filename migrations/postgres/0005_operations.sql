-- Operations at scale: audit paging and search, notification lag, and a row for write probes.

-- The audit API pages newest first by id, filtered by user or kind.
DROP INDEX audit_events_user;
DROP INDEX audit_events_kind;
CREATE INDEX audit_events_user_id ON audit_events (user_id, id);
CREATE INDEX audit_events_kind_id ON audit_events (kind, id);

-- The payload now carries when the revocation was written (database clock, milliseconds), so
-- replicas can measure how long it took to reach them. Readers that ignore the payload (older
-- replicas) are unaffected.
CREATE OR REPLACE FUNCTION gatehouse_notify_revocation() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('gatehouse_revocations',
        NEW.id::text || ' ' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

-- While the database is marked unavailable after failed writes (disk full, read-only), each
-- replica probes with a write to this one row until one succeeds.
CREATE TABLE write_probes (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL
);
