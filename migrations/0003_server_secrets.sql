-- Secrets the server makes for itself once and keeps across restarts, such as the key that
-- turns a playground client's address into its own session id (so the id stays the same
-- after a restart, and nobody outside can compute another client's).
CREATE TABLE server_secrets (
    name   TEXT PRIMARY KEY NOT NULL,
    value  BLOB NOT NULL
);
