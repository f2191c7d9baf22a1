-- Sign-in without an identity provider: email codes and links, passwords, lockout, TOTP, and
-- the multi-step sign-in API.

-- The sign-in methods an org allows (comma-separated: sso, email_code, password, totp); NULL
-- means the default (`[local] methods`, or SSO when the org has an IdP).
ALTER TABLE organizations ADD COLUMN methods TEXT;

-- A user's local credentials and lockout state. The password hash is a PHC string (argon2id,
-- its parameters inside); the TOTP secret is sealed with token.encryption_key.
CREATE TABLE local_credentials (
    user_id             BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash       TEXT,
    password_changed_at INTEGER,
    totp_secret         TEXT,
    totp_enrolled_at    INTEGER,
    -- The last TOTP time step used: a code is accepted only for a later step (no replay).
    totp_last_step      INTEGER,
    -- Enrollment in progress: the secret shown, waiting for its first code.
    totp_pending        TEXT,
    failed_attempts     INTEGER NOT NULL DEFAULT 0,
    locked_until        INTEGER,
    updated_at          INTEGER NOT NULL
);

-- TOTP recovery codes, single use, stored as SHA-256.
CREATE TABLE recovery_codes (
    user_id   BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

-- Sign-ins in progress (the browser's flow cookie, or the API's x-session-token), keyed by
-- the token's SHA-256. The emailed code and link are stored as hashes only.
CREATE TABLE local_flows (
    token_hash      TEXT PRIMARY KEY,
    email           TEXT NOT NULL,
    client_id       TEXT,
    redirect_to     TEXT,
    signup          BOOLEAN NOT NULL DEFAULT FALSE,
    code_hash       TEXT,
    link_hash       TEXT UNIQUE,
    code_expires_at INTEGER,
    code_attempts   INTEGER NOT NULL DEFAULT 0,
    -- The first factor that passed (`email` or `pwd`) and whose account it proved.
    first_factor    TEXT,
    user_id         BLOB,
    failures        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX local_flows_expiry ON local_flows (expires_at);

-- Password-reset links, single use, keyed by the token's SHA-256.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX password_resets_expiry ON password_resets (expires_at);
