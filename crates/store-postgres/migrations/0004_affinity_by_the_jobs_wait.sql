-- Affinity measured by the job's own wait, not by the session's idle time.
--
-- 0002/0003 let another host take a session's job once the session had been idle for the
-- affinity window since its last job finished (`sessions.released_at`). A learner who reads
-- and thinks for longer than that between two runs (most of them) then had their next job
-- taken by whichever host was free first, and their session rebuilt there by replaying its
-- whole history: with two hosts, about every second job after a pause. Now the host that
-- ran the session's last job keeps it for as long as that host lives, and another host takes
-- one of its jobs only once that job has waited the affinity window in the queue (its owner
-- is busy) or when the owner is dead. An idle owner is woken by the job's notice and claims
-- it at once. (`sessions.released_at` is still kept: when the session's last job ended.)
CREATE OR REPLACE FUNCTION claim_next_job(p_lock BIGINT, p_host TEXT, p_now TEXT,
                                          p_cutoff TEXT, p_lease_ms BIGINT)
RETURNS TABLE (job jobs, session_generation BIGINT, cell_position BIGINT,
               more_queued BOOLEAN)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    claimed jobs;
BEGIN
    -- As in 0003: the claim's commit does not wait for its WAL flush, and claims take turns.
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
          -- Affinity: a job of a session another live host ran last waits for that host
          -- until the job was accepted longer ago than the window (`p_cutoff`).
          AND (candidate.session_id IS NULL OR candidate.created_at <= p_cutoff
               OR NOT EXISTS (
                 SELECT 1 FROM sessions AS s JOIN hosts AS owner ON owner.id = s.host
                 WHERE s.id = candidate.session_id AND s.host <> p_host
                   AND owner.beat_at > now() - make_interval(secs => p_lease_ms / 1000.0)))
        ORDER BY seq LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING * INTO claimed;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE sessions SET host = p_host WHERE id = claimed.session_id;
    RETURN QUERY SELECT
        claimed,
        (SELECT generation FROM sessions WHERE sessions.id = claimed.session_id),
        (SELECT position FROM history WHERE history.session_id = claimed.session_id
             AND history.code_id = COALESCE(claimed.code_id, claimed.id)),
        EXISTS (SELECT 1 FROM jobs AS behind
                WHERE behind.status = 'queued' AND behind.seq <> claimed.seq);
END $$;
