-- SAML assertion and LogoutRequest IDs already accepted (replay), kept until they expire.
CREATE TABLE saml_messages_seen (
    issuer     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, message_id)
);
CREATE INDEX saml_messages_seen_expiry ON saml_messages_seen (expires_at);
