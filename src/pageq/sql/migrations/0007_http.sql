-- The HTTP API: nonces of signed requests, so that a captured request cannot be replayed while its
-- timestamp is still inside the 300 s window, whichever server process it reaches. A row lives until its
-- request's window has passed (the server prunes expired rows). Only the owner touches it.
CREATE TABLE {schema}.request_nonces (
    key_id     text        NOT NULL,
    nonce      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX request_nonces_expires_idx ON {schema}.request_nonces (expires_at);
