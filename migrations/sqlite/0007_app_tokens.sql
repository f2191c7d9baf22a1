-- First-party app tokens ([[client]]): authorization codes and refresh tokens, stored by the
-- hex SHA-256 of the token only.

-- An authorization code between /auth/authorize and /auth/token: consumed exactly once.
CREATE TABLE app_codes (
    code_hash      TEXT PRIMARY KEY NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,              -- PKCE S256
    scope          TEXT,                       -- space-separated; NULL for none
    user_id        BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_hash   TEXT NOT NULL,              -- the browser session that approved it
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX app_codes_expiry ON app_codes (expires_at);

-- One row per refresh token. A family is the chain of tokens rotated from one code; it ends
-- at family_expires_at whatever the rotations, and is revoked as a whole.
CREATE TABLE app_refresh_tokens (
    token_hash        TEXT PRIMARY KEY NOT NULL,
    family_id         BLOB NOT NULL,
    client_id         TEXT NOT NULL,
    user_id           BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope             TEXT,
    code_hash         TEXT,                    -- the code the family came from (first token only)
    session_hash      TEXT,
    auth              TEXT,                    -- JSON: amr, acr, auth_time of the sign-in
    created_at        INTEGER NOT NULL,
    family_expires_at INTEGER NOT NULL,
    used_at           INTEGER,                 -- rotated: presenting it again is reuse
    revoked_at        INTEGER
);
CREATE INDEX app_refresh_tokens_user ON app_refresh_tokens (user_id);
CREATE INDEX app_refresh_tokens_family ON app_refresh_tokens (family_id);
CREATE INDEX app_refresh_tokens_code ON app_refresh_tokens (code_hash);
CREATE INDEX app_refresh_tokens_expiry ON app_refresh_tokens (family_expires_at);
