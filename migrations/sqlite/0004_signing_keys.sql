-- Keys that sign the tokens gatehouse mints for upstreams (x-gatehouse-jwt). Every replica
-- signs with the same current key: the one with the latest activates_at that has passed. A key
-- is published in the JWKS from creation (so verifiers know it before it signs anything) until
-- the tokens it signed have expired after its successor took over; then it is deleted.
CREATE TABLE signing_keys (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order: breaks ties between keys activated in the same second
    kid          TEXT NOT NULL UNIQUE,
    algorithm    TEXT NOT NULL,              -- EdDSA | ES256 | RS256
    public_jwk   TEXT NOT NULL,              -- JSON
    private_key  TEXT NOT NULL,              -- base64(nonce || XChaCha20-Poly1305(DER)), AAD = kid
    created_at   INTEGER NOT NULL,
    activates_at INTEGER NOT NULL
);
