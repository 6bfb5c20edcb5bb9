-- The first schema. Never edit an applied migration: evolve the schema with new files.

-- A learner's MeTTa session. `generation` counts every change of its history, so a live
-- atomspace in the engine can tell whether it still equals a replay of the history.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- The replayable cells of a session, in position order.
CREATE TABLE history (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    code_id      TEXT NOT NULL,
    code         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    last_job_id  TEXT,
    last_result  TEXT,
    PRIMARY KEY (session_id, position),
    UNIQUE (session_id, code_id)
);

-- Every request, in acceptance order (`seq`). `id` is the public UUID v7.
CREATE TABLE jobs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL,
    language          TEXT,
    session_id        TEXT,
    code_id           TEXT,
    code              TEXT NOT NULL DEFAULT '',
    stdin             TEXT,
    timeout_ms        INTEGER NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    result            TEXT,
    results_json      TEXT,
    stdout            TEXT,
    stderr            TEXT,
    output_truncated  INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    -- Who a failure is down to: 'code' (the learner's code), 'service' (ours),
    -- 'not_found' (a history cut named a missing cell).
    error_kind        TEXT,
    idempotency_key   TEXT UNIQUE,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    duration_ms       INTEGER
);

-- "Next queued job" and "the running job" in O(log n), whatever the size of the log.
CREATE INDEX jobs_active ON jobs(status, seq) WHERE status IN ('queued', 'running');
-- A session's job log, for instructors.
CREATE INDEX jobs_by_session ON jobs(session_id, seq);
