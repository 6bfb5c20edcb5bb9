-- Session affinity: the host that ran a session's last job (`host`, set by the claim) keeps
-- the session live in its engine, so it gets the session's next job when it is free; any
-- other host takes that job only once the session has been waiting for longer than the
-- affinity window since its last job finished (`released_at`), or when that host is dead.
ALTER TABLE sessions ADD COLUMN host TEXT;
ALTER TABLE sessions ADD COLUMN released_at TEXT;

CREATE OR REPLACE FUNCTION jobs_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target BIGINT;
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
    IF OLD.status = 'running' AND NEW.session_id IS NOT NULL THEN
        UPDATE sessions SET released_at = COALESCE(NEW.finished_at, released_at)
        WHERE id = NEW.session_id;
    END IF;
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
