-- A job's steps in one round trip each: a claim was five (BEGIN, the lock, the claim, the
-- session's owner, COMMIT), and the worker waited for each and for the claim's WAL flush
-- before it could start the job; an insert was four.

-- The claim (see `claim_next_job` in src/lib.rs for its rules) as one call: the advisory
-- lock that makes claims take turns, then the claim itself, then the session's new owner.
-- In a VOLATILE function each statement takes a fresh snapshot, so the claim statement sees
-- every claim committed before the lock was granted, as the separate statements of a
-- transaction did. PL/pgSQL, not SQL: it keeps its plans for the connection's life.
-- The claim asks of each queued candidate whether its session has a running job or an
-- older queued one: two probes of partial indexes (the running one exists), instead of a scan
-- of every job the session ever had.
CREATE INDEX jobs_queued_by_session ON jobs(session_id, seq) WHERE status = 'queued';

CREATE FUNCTION claim_next_job(p_lock BIGINT, p_host TEXT, p_now TEXT, p_cutoff TEXT,
                               p_lease_ms BIGINT)
RETURNS TABLE (job jobs, session_generation BIGINT, cell_position BIGINT,
               more_queued BOOLEAN)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    claimed jobs;
BEGIN
    -- The claim's commit does not wait for its WAL flush (the job's finish, or any later
    -- commit, flushes it): a PostgreSQL crash can only lose a claim whose job's outcome was
    -- not stored either, and that job is then simply still queued. The worker runs the job
    -- without waiting for a disk write.
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(p_lock);
    UPDATE jobs SET status = 'running', started_at = p_now, attempts = attempts + 1,
                    host = p_host
    WHERE seq = (
        SELECT seq FROM jobs AS candidate
        WHERE status = 'queued'
          AND (candidate.session_id IS NULL OR (
                 NOT EXISTS (SELECT 1 FROM jobs AS other
                             WHERE other.session_id = candidate.session_id
                               AND other.status = 'running')
                 AND NOT EXISTS (SELECT 1 FROM jobs AS other
                                 WHERE other.session_id = candidate.session_id
                                   AND other.status = 'queued'
                                   AND other.seq < candidate.seq)))
          AND (candidate.session_id IS NULL OR NOT EXISTS (
                 SELECT 1 FROM sessions AS s JOIN hosts AS owner ON owner.id = s.host
                 WHERE s.id = candidate.session_id AND s.host <> p_host
                   AND s.released_at > p_cutoff
                   AND owner.beat_at > now() - make_interval(secs => p_lease_ms / 1000.0)))
        ORDER BY seq LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING * INTO claimed;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A statement of its own, after the claim's triggers (which lock the counts' rows):
    -- rows are locked in the order an insert locks them (counts, then the session), so a
    -- claim and an insert never wait for each other in a cycle.
    UPDATE sessions SET host = p_host WHERE id = claimed.session_id;
    RETURN QUERY SELECT
        claimed,
        (SELECT generation FROM sessions WHERE sessions.id = claimed.session_id),
        (SELECT position FROM history WHERE history.session_id = claimed.session_id
             AND history.code_id = COALESCE(claimed.code_id, claimed.id)),
        EXISTS (SELECT 1 FROM jobs AS behind
                WHERE behind.status = 'queued' AND behind.seq <> claimed.seq);
END $$;

-- Notices that say whom they concern, so a host wakes only for work it may do:
-- `jobs_queued` names the host that owns the job's session (empty when none does): another
-- host may not claim it before the affinity window, so it looks once then instead of at
-- once; `jobs_finished` names the host that ran the job, which announces the final record
-- to its own long-waits itself, so only the other hosts' waiters read it.
CREATE OR REPLACE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status = 'queued' THEN
        PERFORM pg_notify('jobs_queued', NEW.id || ' ' || COALESCE(
            (SELECT host FROM sessions WHERE id = NEW.session_id), ''));
    ELSIF NEW.status NOT IN ('queued', 'running') THEN
        PERFORM pg_notify('jobs_finished', NEW.id || ' ' || COALESCE(NEW.host, ''));
    END IF;
    RETURN NULL;
END $$;

-- An insert as one call: the queue's count row is locked first (inserts on every host take
-- turns, so the cap holds globally), then the job is inserted, then its position is counted
-- (a statement of its own, begun after the lock was granted, so it sees every earlier
-- insert). The same statements, in the same order, as the transaction they replace.
CREATE FUNCTION enqueue_job(p_id TEXT, p_kind TEXT, p_language TEXT, p_session_id TEXT,
                            p_code_id TEXT, p_code TEXT, p_stdin TEXT, p_timeout_ms BIGINT,
                            p_idempotency_key TEXT, p_idempotency_scope TEXT, p_now TEXT,
                            p_max_queued BIGINT)
RETURNS TABLE (job jobs, queue_position BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queued_now BIGINT;
    inserted jobs;
BEGIN
    SELECT n INTO queued_now FROM job_counts WHERE status = 'queued' FOR UPDATE;
    IF queued_now >= p_max_queued THEN
        RETURN;
    END IF;
    INSERT INTO jobs (id, kind, language, session_id, code_id, code, stdin, timeout_ms,
                      status, idempotency_key, idempotency_scope, created_at)
    VALUES (p_id, p_kind, p_language, p_session_id, p_code_id, p_code, p_stdin, p_timeout_ms,
            'queued', p_idempotency_key, p_idempotency_scope, p_now)
    ON CONFLICT DO NOTHING
    RETURNING * INTO inserted;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT inserted,
        (SELECT COUNT(*) FROM jobs AS ahead
         WHERE ahead.status = 'queued' AND ahead.seq < inserted.seq) + 1;
END $$;
