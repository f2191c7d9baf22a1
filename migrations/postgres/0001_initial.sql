-- gatehouse schema, PostgreSQL. Timestamps are Unix seconds; ids are UUIDs.
-- Never edit a migration once released: add a new one.

CREATE TABLE organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    auto_enable BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);

-- Exact email domain -> org. Lower-case; no suffix matching.
CREATE TABLE org_domains (
    domain TEXT PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE
);

CREATE TABLE users (
    id         UUID PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,          -- lower-cased
    name       TEXT,
    org_id     UUID REFERENCES organizations (id) ON DELETE SET NULL,
    enabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- An IdP account. Identity is (issuer, subject), never the email.
CREATE TABLE identities (
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    user_id        UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idp            TEXT NOT NULL,             -- configured IdP name at first login
    email          TEXT,                      -- as the IdP last asserted it
    email_verified BOOLEAN,
    created_at     BIGINT NOT NULL,
    last_login_at  BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX identities_user ON identities (user_id);

CREATE TABLE user_roles (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Keyed by the hex SHA-256 of the session token: the token itself is never stored.
CREATE TABLE sessions (
    id_hash             TEXT PRIMARY KEY,
    user_id             UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    impersonator_id     UUID REFERENCES users (id) ON DELETE CASCADE,
    idp                 TEXT,
    id_token            TEXT,                 -- for id_token_hint at RP-initiated logout
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    revoked_at          BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_absolute_expiry ON sessions (absolute_expires_at);

-- A login in progress, keyed by the hex SHA-256 of `state`; consumed exactly once.
CREATE TABLE login_states (
    state_hash    TEXT PRIMARY KEY,
    binding_hash  TEXT NOT NULL,              -- SHA-256 of the browser-binding cookie
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    idp           TEXT NOT NULL,
    redirect_to   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX login_states_expiry ON login_states (expires_at);

CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    outcome    TEXT NOT NULL,                 -- success | failure
    user_id    UUID,                          -- no foreign key: the trail outlives users
    actor      TEXT,
    idp        TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_user ON audit_events (user_id);
CREATE INDEX audit_events_kind ON audit_events (kind);

-- Changes that cached sessions must not outlive (logout, disable, revoke, role change). Every
-- replica reads new rows and drops the matching cache entries: one session when session_hash
-- is set, else every session of user_id, else (both NULL) every session.
CREATE TABLE revocations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      UUID,
    session_hash TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);

-- Wake every replica's LISTEN as soon as a revocation commits (any writer: server or CLI).
CREATE FUNCTION gatehouse_notify_revocation() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('gatehouse_revocations', NEW.id::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER revocations_notify AFTER INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION gatehouse_notify_revocation();
