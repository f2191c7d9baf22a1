-- gatehouse schema, SQLite. Timestamps are Unix seconds; ids are 16-byte UUID blobs.
-- Never edit a migration once released: add a new one.

CREATE TABLE organizations (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    auto_enable BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  INTEGER NOT NULL
);

-- Exact email domain -> org. Lower-case; no suffix matching.
CREATE TABLE org_domains (
    domain TEXT PRIMARY KEY NOT NULL,
    org_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE
);

CREATE TABLE users (
    id         BLOB PRIMARY KEY NOT NULL,
    email      TEXT NOT NULL UNIQUE,          -- lower-cased
    name       TEXT,
    org_id     BLOB REFERENCES organizations (id) ON DELETE SET NULL,
    enabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- An IdP account. Identity is (issuer, subject), never the email.
CREATE TABLE identities (
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    user_id        BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idp            TEXT NOT NULL,             -- configured IdP name at first login
    email          TEXT,                      -- as the IdP last asserted it
    email_verified BOOLEAN,
    created_at     INTEGER NOT NULL,
    last_login_at  INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX identities_user ON identities (user_id);

CREATE TABLE user_roles (
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Keyed by the hex SHA-256 of the session token: the token itself is never stored.
CREATE TABLE sessions (
    id_hash             TEXT PRIMARY KEY NOT NULL,
    user_id             BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    impersonator_id     BLOB REFERENCES users (id) ON DELETE CASCADE,
    idp                 TEXT,
    id_token            TEXT,                 -- for id_token_hint at RP-initiated logout
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    idle_expires_at     INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at          INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_absolute_expiry ON sessions (absolute_expires_at);

-- A login in progress, keyed by the hex SHA-256 of `state`; consumed exactly once.
CREATE TABLE login_states (
    state_hash    TEXT PRIMARY KEY NOT NULL,
    binding_hash  TEXT NOT NULL,              -- SHA-256 of the browser-binding cookie
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    idp           TEXT NOT NULL,
    redirect_to   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX login_states_expiry ON login_states (expires_at);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    outcome    TEXT NOT NULL,                 -- success | failure
    user_id    BLOB,                          -- no foreign key: the trail outlives users
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
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BLOB,
    session_hash TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);
