-- Sign-in beyond one config file: per-organization sign-in settings, the strength of each
-- session's authentication (step-up MFA), roles mapped from IdP claims, sign-ups on request,
-- and OIDC back-channel logout.

-- Per org: the [[idp]] its users sign in with, extra authorize parameters (a JSON object, e.g.
-- the Auth0 `connection` of that customer's SSO), and whether its users must use MFA.
ALTER TABLE organizations ADD COLUMN idp TEXT;
ALTER TABLE organizations ADD COLUMN idp_params TEXT;
ALTER TABLE organizations ADD COLUMN require_mfa BOOLEAN NOT NULL DEFAULT FALSE;

-- How the session's user authenticated, from the ID token: `amr` (space-separated), `acr`,
-- `auth_time`. The IdP account and its `sid` let a back-channel logout find the session.
ALTER TABLE sessions ADD COLUMN amr TEXT;
ALTER TABLE sessions ADD COLUMN acr TEXT;
ALTER TABLE sessions ADD COLUMN auth_time BIGINT;
ALTER TABLE sessions ADD COLUMN idp_subject TEXT;
ALTER TABLE sessions ADD COLUMN idp_sid TEXT;
CREATE INDEX sessions_idp_subject ON sessions (idp, idp_subject);
CREATE INDEX sessions_idp_sid ON sessions (idp, idp_sid);

-- What a login in progress asked for: a sign-up (`signup=1`), a step-up (JSON: the strength
-- the ID token must show), and the account it is for, when known (failure counting).
ALTER TABLE login_states ADD COLUMN signup BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE login_states ADD COLUMN step_up TEXT;
ALTER TABLE login_states ADD COLUMN account TEXT;

-- Roles an IdP's claims grant (`[[idp]] role_claims`), replaced at each login through that
-- IdP. Kept apart from roles granted by hand (user_roles), which a login never touches.
CREATE TABLE idp_roles (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idp        TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, idp, role)
);

-- A user's roles from either source: what checks and tokens see.
CREATE VIEW effective_roles AS
    SELECT user_id, role FROM user_roles
    UNION
    SELECT user_id, role FROM idp_roles;

-- Back-channel logout tokens already used (`jti` replay), kept until they would expire.
CREATE TABLE logout_tokens_seen (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX logout_tokens_seen_expiry ON logout_tokens_seen (expires_at);
