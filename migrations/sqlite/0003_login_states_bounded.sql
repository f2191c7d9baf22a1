-- Logins in progress are capped per browser binding and per client address (the oldest go),
-- so `/auth/login` in a loop cannot fill the table. `seq` orders them; `client_ip` groups
-- them. Pending logins are short-lived, so the table is recreated rather than altered
-- (SQLite cannot add an autoincrement column): a login in flight during the upgrade has to
-- be started again.
DROP TABLE login_states;
CREATE TABLE login_states (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    state_hash    TEXT NOT NULL UNIQUE,       -- hex SHA-256 of `state`; consumed exactly once
    binding_hash  TEXT NOT NULL,              -- SHA-256 of the browser-binding cookie
    client_ip     TEXT,                       -- who started it, when known
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    idp           TEXT NOT NULL,
    redirect_to   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX login_states_expiry ON login_states (expires_at);
CREATE INDEX login_states_binding ON login_states (binding_hash, seq);
CREATE INDEX login_states_client ON login_states (client_ip, seq);
