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

-- "Next queued job", "jobs ahead of this one" and "the running job" touch only active rows,
-- whatever the size of the log. (A partial index is used only for a query whose WHERE names
-- its condition, so each state has its own.)
CREATE INDEX jobs_queued ON jobs(seq) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs(seq) WHERE status = 'running';
-- A session's job log, for instructors.
CREATE INDEX jobs_by_session ON jobs(session_id, seq);

-- Jobs per state, kept by triggers, so the queue cap, /health and /api/v1/queue never count
-- the whole log.
CREATE TABLE job_counts (
    status  TEXT PRIMARY KEY NOT NULL,
    n       INTEGER NOT NULL
);
INSERT INTO job_counts (status, n) VALUES
    ('queued', 0), ('running', 0), ('succeeded', 0), ('failed', 0), ('timed_out', 0), ('cancelled', 0);

CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs
BEGIN
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER jobs_counted_on_status_change AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;

-- Every session a job names has a row, so instructors see it even when all its runs failed.
CREATE TRIGGER jobs_session_recorded AFTER INSERT ON jobs
WHEN NEW.session_id IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO sessions (id, generation, created_at, updated_at)
    VALUES (NEW.session_id, 0, NEW.created_at, NEW.created_at);
END;

-- A MeTTa run that succeeds enters its session's history in the same statement that stores
-- its result (so the history changes exactly when a result is stored, never apart): a new
-- codeId (default: the job id) goes last, a known one keeps its position and gets the new
-- code, and the session's generation counts the change.
CREATE TRIGGER metta_success_recorded_in_history AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'succeeded' AND NEW.kind = 'run' AND NEW.language = 'metta'
BEGIN
    UPDATE sessions SET generation = generation + 1, updated_at = NEW.finished_at
    WHERE id = NEW.session_id;
    INSERT INTO history (session_id, position, code_id, code, created_at, updated_at,
                         last_job_id, last_result)
    SELECT NEW.session_id, COALESCE(MAX(position), 0) + 1, COALESCE(NEW.code_id, NEW.id),
           NEW.code, NEW.finished_at, NEW.finished_at, NEW.id, NEW.result
    FROM history WHERE session_id = NEW.session_id
    ON CONFLICT (session_id, code_id) DO UPDATE SET
        code = excluded.code, updated_at = excluded.updated_at,
        last_job_id = excluded.last_job_id, last_result = excluded.last_result;
END;
