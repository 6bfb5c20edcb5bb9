-- The PostgreSQL schema: the same tables, columns and history rules as the SQLite store's
-- migrations/ (0001-0003) end with, written once for PostgreSQL. Times stay RFC 3339 text in
-- UTC with milliseconds (as on SQLite), so a job record reads the same from either store.
-- Never edit an applied migration: evolve the schema with new files.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    generation  BIGINT NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE history (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    code_id      TEXT NOT NULL,
    code         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    last_job_id  TEXT,
    last_result  TEXT,
    PRIMARY KEY (session_id, position),
    UNIQUE (session_id, code_id)
);

-- Every request, in acceptance order (`seq`). `host` names the server process that claimed
-- a running job (see `hosts`), so a dead host's jobs can be told from a live one's.
CREATE TABLE jobs (
    seq                BIGSERIAL PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,
    language           TEXT,
    session_id         TEXT,
    code_id            TEXT,
    code               TEXT NOT NULL DEFAULT '',
    stdin              TEXT,
    timeout_ms         BIGINT NOT NULL,
    status             TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    result             TEXT,
    results_json       TEXT,
    stdout             TEXT,
    stderr             TEXT,
    output_truncated   BOOLEAN NOT NULL DEFAULT FALSE,
    error              TEXT,
    error_kind         TEXT,
    idempotency_key    TEXT,
    created_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT,
    duration_ms        BIGINT,
    idempotency_scope  TEXT,
    host               TEXT
);

CREATE INDEX jobs_queued ON jobs(seq) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs(seq) WHERE status = 'running';
CREATE INDEX jobs_running_by_session ON jobs(session_id) WHERE status = 'running';
CREATE INDEX jobs_by_session ON jobs(session_id, seq);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs(idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Jobs per state, kept by triggers (the queue cap, /health and /api/v1/queue never count the
-- whole log). Global: every host reads and keeps the same counts.
CREATE TABLE job_counts (
    status  TEXT PRIMARY KEY,
    n       BIGINT NOT NULL
);
INSERT INTO job_counts (status, n) VALUES
    ('queued', 0), ('running', 0), ('succeeded', 0), ('failed', 0), ('timed_out', 0), ('cancelled', 0);

CREATE TABLE server_secrets (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);

-- The server processes on this database and their last heart-beat; a host whose heart-beat
-- is older than the lease is dead, and another host rescues its running jobs.
CREATE TABLE hosts (
    id          TEXT PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    beat_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE FUNCTION jobs_counted_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
    IF NEW.session_id IS NOT NULL THEN
        INSERT INTO sessions (id, generation, created_at, updated_at)
        VALUES (NEW.session_id, 0, NEW.created_at, NEW.created_at)
        ON CONFLICT (id) DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_counted_on_insert();

-- A status change: the counts, and the history rules of the SQLite store's triggers (a MeTTa
-- run that succeeded enters its session's history; a reset empties it; a cut removes its
-- target and every cell after it), in the statement that stores the job's final state.
CREATE FUNCTION jobs_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target BIGINT;
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
    IF NEW.status <> 'succeeded' THEN
        RETURN NULL;
    END IF;
    IF NEW.kind = 'run' AND NEW.language = 'metta' THEN
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
    ELSIF NEW.kind = 'reset_session' THEN
        UPDATE sessions SET generation = generation + 1, updated_at = NEW.finished_at
        WHERE id = NEW.session_id;
        DELETE FROM history WHERE session_id = NEW.session_id;
    ELSIF NEW.kind IN ('reset_to', 'remove_cell') THEN
        SELECT position INTO target FROM history
        WHERE session_id = NEW.session_id AND code_id = NEW.code_id;
        IF target IS NOT NULL THEN
            UPDATE sessions SET generation = generation + 1, updated_at = NEW.finished_at
            WHERE id = NEW.session_id;
            DELETE FROM history WHERE session_id = NEW.session_id AND position >= target;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_status_changed AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION jobs_status_changed();

-- Every host learns at once that a job was accepted (its worker may claim it) or finished
-- (its long-waits answer), whichever host stored it: NOTIFY is delivered at commit.
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status = 'queued' THEN
        PERFORM pg_notify('jobs_queued', NEW.id);
    ELSIF NEW.status NOT IN ('queued', 'running') THEN
        PERFORM pg_notify('jobs_finished', NEW.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_notify();
CREATE TRIGGER jobs_notify_update AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION jobs_notify();
