-- Two changes, both about keeping one rule in one place.
--
-- 1. Every change of a session's history is a trigger on the job whose final state is
--    stored. The first migration already appended a successful MeTTa run's cell this way;
--    resets and cuts now follow the same rule, so a session's history changes exactly when,
--    and only when, a job that changes it is stored as succeeded, in the same statement.
--
-- 2. Idempotency keys are scoped to the client that sent them (`idempotency_scope`: the
--    session or the client's identity), so the same key from two clients names two jobs.
--    SQLite cannot drop the column's UNIQUE constraint in place, so the jobs table is rebuilt
--    (the documented 12-step way), keeping every row, its `seq` and the AUTOINCREMENT counter.

CREATE TABLE jobs_rebuilt (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,
    language           TEXT,
    session_id         TEXT,
    code_id            TEXT,
    code               TEXT NOT NULL DEFAULT '',
    stdin              TEXT,
    timeout_ms         INTEGER NOT NULL,
    status             TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    result             TEXT,
    results_json       TEXT,
    stdout             TEXT,
    stderr             TEXT,
    output_truncated   INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    error_kind         TEXT,
    idempotency_key    TEXT,
    created_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT,
    duration_ms        INTEGER,
    -- Who the idempotency key belongs to: 'session:<id>' or 'client:<identity>'. NULL for
    -- keys stored before this migration (they never match a new request again).
    idempotency_scope  TEXT
);

INSERT INTO jobs_rebuilt (seq, id, kind, language, session_id, code_id, code, stdin, timeout_ms,
                          status, attempts, result, results_json, stdout, stderr,
                          output_truncated, error, error_kind, idempotency_key, created_at,
                          started_at, finished_at, duration_ms, idempotency_scope)
SELECT seq, id, kind, language, session_id, code_id, code, stdin, timeout_ms, status, attempts,
       result, results_json, stdout, stderr, output_truncated, error, error_kind,
       idempotency_key, created_at, started_at, finished_at, duration_ms, NULL
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;

CREATE INDEX jobs_queued ON jobs(seq) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs(seq) WHERE status = 'running';
CREATE INDEX jobs_by_session ON jobs(session_id, seq);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs(idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The job counts stay right through the rebuild (the rows were copied, not changed); the
-- triggers went with the old table and come back unchanged, plus the two new ones.
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

CREATE TRIGGER jobs_session_recorded AFTER INSERT ON jobs
WHEN NEW.session_id IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO sessions (id, generation, created_at, updated_at)
    VALUES (NEW.session_id, 0, NEW.created_at, NEW.created_at);
END;

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

-- A reset that succeeded empties its session's history.
CREATE TRIGGER reset_recorded_in_history AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'succeeded' AND NEW.kind = 'reset_session'
BEGIN
    UPDATE sessions SET generation = generation + 1, updated_at = NEW.finished_at
    WHERE id = NEW.session_id;
    DELETE FROM history WHERE session_id = NEW.session_id;
END;

-- A cut (reset-to, remove) that succeeded removes its target cell and every cell after it.
-- A cut of an empty history also succeeds (the original service answered it with success);
-- then there is nothing to remove and the generation stays.
CREATE TRIGGER cut_recorded_in_history AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'succeeded' AND NEW.kind IN ('reset_to', 'remove_cell')
     AND EXISTS (SELECT 1 FROM history
                 WHERE session_id = NEW.session_id AND code_id = NEW.code_id)
BEGIN
    UPDATE sessions SET generation = generation + 1, updated_at = NEW.finished_at
    WHERE id = NEW.session_id;
    DELETE FROM history
    WHERE session_id = NEW.session_id
      AND position >= (SELECT position FROM history
                       WHERE session_id = NEW.session_id AND code_id = NEW.code_id);
END;
