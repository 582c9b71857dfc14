-- People and agents known to the gateway, and the API keys they hold.
-- An API key is stored only as the SHA-256 of its random secret; the visible prefix finds the row.

CREATE TABLE users (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    subject      text        NOT NULL UNIQUE,
    email        text,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz
);

CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    prefix      text        NOT NULL UNIQUE,
    secret_hash bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text        NOT NULL DEFAULT '',
    groups      text[]      NOT NULL DEFAULT '{}',
    servers     text[],
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);
