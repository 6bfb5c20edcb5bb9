//! The checks (numbered as in the suite's header), each a function of the evidence, and the
//! report that prints the figures and every check's verdict and fails the test unless all
//! hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use super::end_state::{canonical, EndState, Probe};
use super::faults::{epoch_of, ChaosLog};
use super::workload::{load, session_name, str_of, symbol, Counters, Outcome, Shared};
use super::{
    CLIENTS, ENGINE_DIED, ENGINE_KILLS, INTERRUPTED_TWICE, JOBS_PER_CLIENT,
    RELIABILITY_MAX_BATCH_JOBS, SERVER_KILLS, SESSIONS,
};
use crate::support::StoredJob;

pub struct Check {
    pub name: &'static str,
    pub problems: Vec<String>,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str) -> Check {
        Check {
            name,
            problems: Vec::new(),
            detail: String::new(),
        }
    }

    pub fn fail(&mut self, problem: String) {
        self.problems.push(problem);
    }
}

/// The stored jobs, indexed the ways the checks look them up.
struct Rows<'a> {
    all: &'a [StoredJob],
    by_id: HashMap<&'a str, &'a StoredJob>,
    by_key: HashMap<&'a str, Vec<&'a StoredJob>>,
    /// The jobs started in each server life (by their last start).
    started_by_epoch: BTreeMap<usize, Vec<&'a StoredJob>>,
}

impl<'a> Rows<'a> {
    fn index(rows: &'a [StoredJob], log: &ChaosLog) -> Rows<'a> {
        let mut rows_by_id: HashMap<&str, &StoredJob> = HashMap::new();
        for row in rows {
            rows_by_id.insert(row.id.as_str(), row);
        }
        let mut rows_by_key: HashMap<&str, Vec<&StoredJob>> = HashMap::new();
        for row in rows {
            if let Some(key) = &row.key {
                rows_by_key.entry(key.as_str()).or_default().push(row);
            }
        }
        let mut started_by_epoch: BTreeMap<usize, Vec<&StoredJob>> = BTreeMap::new();
        for row in rows {
            if let Some(started) = &row.started_at {
                started_by_epoch
                    .entry(epoch_of(&log.launches, started))
                    .or_default()
                    .push(row);
            }
        }
        Rows {
            all: rows,
            by_id: rows_by_id,
            by_key: rows_by_key,
            started_by_epoch,
        }
    }
}

/// Every check, in the order of the suite's header, then the clients' unexpected answers and
/// whether the kill schedule ran in full.
pub fn all(outcomes: &[Outcome], log: &ChaosLog, shared: &Shared, end: &EndState) -> Vec<Check> {
    let rows = Rows::index(&end.rows, log);
    let (explained, interrupted_twice) = outcomes_explained(outcomes, log);
    vec![
        accepted_once(outcomes, &rows, &end.probes),
        one_final_state(outcomes, &rows, &end.queue),
        explained,
        none_ran_twice(&rows, log, &end.recoveries, &interrupted_twice),
        check_fifo(rows.all, &log.launches, &rows.started_by_epoch),
        sessions_equal_their_replay(outcomes, &rows, end),
        no_unexpected_answers(&shared.unexpected.lock().unwrap()),
        kills_happened(log),
    ]
}

/// Check 1: every logical job was accepted exactly once.
fn accepted_once(outcomes: &[Outcome], rows: &Rows<'_>, probes: &[Probe]) -> Check {
    let total = CLIENTS * JOBS_PER_CLIENT;
    let (rows_by_key, rows) = (&rows.by_key, rows.all);
    let mut accepted = Check::new("every logical job was accepted exactly once");
    let mut known_keys: BTreeSet<&str> = BTreeSet::new();
    for outcome in outcomes {
        let key = outcome.plan.key.as_str();
        known_keys.insert(key);
        if outcome.ids.is_empty() {
            accepted.fail(format!("{key}: never accepted"));
        }
        if outcome.ids.len() > 1 {
            accepted.fail(format!(
                "{key}: answered with several job ids {:?}",
                outcome.ids
            ));
        }
        let stored = rows_by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        match stored {
            [row] if outcome.ids.first() == Some(&row.id) => {}
            [row] => accepted.fail(format!(
                "{key}: the client was told {:?}, the database holds {}",
                outcome.ids,
                row.describe()
            )),
            [] => accepted.fail(format!("{key}: no job in the database (lost)")),
            many => accepted.fail(format!(
                "{key}: {} jobs in the database: {:?}",
                many.len(),
                many.iter().map(|row| row.describe()).collect::<Vec<_>>()
            )),
        }
    }
    for probe in probes {
        known_keys.insert(probe.key.as_str());
    }
    for row in rows {
        if !row
            .key
            .as_deref()
            .is_some_and(|key| known_keys.contains(key))
        {
            accepted.fail(format!(
                "a job nobody submitted (key {:?}): {}",
                row.key,
                row.describe()
            ));
        }
    }
    let accepted_ids = outcomes.iter().filter(|o| !o.ids.is_empty()).count();
    accepted.detail = format!(
        "{accepted_ids} of {total} logical jobs accepted, {} idempotency keys -> {} job ids; \
         {} rows in the database ({} probes)",
        known_keys.len(),
        rows_by_key.len(),
        rows.len(),
        probes.len()
    );
    accepted
}

/// Check 2: every job reached exactly one final state.
fn one_final_state(outcomes: &[Outcome], rows: &Rows<'_>, queue: &Value) -> Check {
    let (rows_by_id, rows) = (&rows.by_id, rows.all);
    let mut final_check = Check::new("every job reached exactly one final state");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        *by_status.entry(row.status.clone()).or_default() += 1;
        if !matches!(
            row.status.as_str(),
            "succeeded" | "failed" | "timed_out" | "cancelled"
        ) {
            final_check.fail(format!("not final at the end: {}", row.describe()));
        }
    }
    for outcome in outcomes {
        let Some(job) = &outcome.job else {
            if !outcome.ids.is_empty() {
                final_check.fail(format!(
                    "{}: job {:?} never seen final by its client",
                    outcome.plan.key, outcome.ids
                ));
            }
            continue;
        };
        let id = str_of(job, "id").unwrap_or_default();
        let Some(row) = rows_by_id.get(id.as_str()) else {
            continue;
        };
        let seen = (
            str_of(job, "status"),
            str_of(job, "result"),
            job["attempts"].as_i64(),
            str_of(job, "startedAt"),
            str_of(job, "finishedAt"),
        );
        let stored = (
            Some(row.status.clone()),
            row.result.clone(),
            Some(row.attempts),
            row.started_at.clone(),
            row.finished_at.clone(),
        );
        if seen != stored {
            final_check.fail(format!(
                "job {id}: the client saw final {seen:?}, the database holds {stored:?} (two results)"
            ));
        }
        if let Some(again) = &outcome.resubmitted {
            let same = str_of(again, "id") == Some(id.clone())
                && again["status"] == job["status"]
                && again["result"] == job["result"];
            if !same {
                final_check.fail(format!(
                    "job {id}: re-submitting its key {} answered {again}",
                    outcome.plan.key
                ));
            }
        }
    }
    for field in ["queued", "running"] {
        if queue[field] != 0 {
            final_check.fail(format!("GET /api/v1/queue at the end: {queue}"));
        }
    }
    let resubmitted = outcomes.iter().filter(|o| o.resubmitted.is_some()).count();
    final_check.detail = format!(
        "by status {by_status:?}; {resubmitted} finished jobs re-submitted with their key, each \
         answered with the same job"
    );
    final_check
}

/// Check 3: every outcome is the one its code must give, or explained; also the ids of the jobs
/// that failed as interrupted twice (check 4 counts them).
fn outcomes_explained(outcomes: &[Outcome], log: &ChaosLog) -> (Check, Vec<String>) {
    let mut explained = Check::new("every outcome is the one its code must give, or explained");
    let mut engine_died = Vec::new();
    let mut interrupted_twice = Vec::new();
    let mut meant_to_fail = 0;
    let mut by_kind: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for outcome in outcomes {
        let Some(job) = &outcome.job else { continue };
        let id = str_of(job, "id").unwrap_or_default();
        let status = job["status"].as_str().unwrap_or_default();
        let error = job["error"].as_str().unwrap_or_default();
        *by_kind
            .entry(outcome.plan.kind.name())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
        let describe = || {
            format!(
                "job {id} ({}, {:?}, attempts {}): {status}, result {:?}, error {error:?}",
                outcome.plan.kind.name(),
                outcome.plan.code,
                job["attempts"],
                job["result"]
            )
        };
        match (status, outcome.plan.expected_result()) {
            ("succeeded", Some(expected)) if job["result"] == expected.as_str() => {}
            ("succeeded", expected) => {
                explained.fail(format!("{}; expected {expected:?}", describe()))
            }
            ("failed", _) if error.contains(INTERRUPTED_TWICE) => interrupted_twice.push(id),
            ("failed", _) if error.contains(ENGINE_DIED) && outcome.plan.session.is_some() => {
                engine_died.push(id)
            }
            ("failed", None) if job["errorKind"] == "code" && !error.is_empty() => {
                meant_to_fail += 1
            }
            _ => explained.fail(format!("unexplained: {}", describe())),
        }
    }
    if engine_died.len() > log.engine_kills.len() {
        explained.fail(format!(
            "{} jobs failed with a dead engine, but the suite killed it only {} times: {engine_died:?}",
            engine_died.len(),
            log.engine_kills.len()
        ));
    }
    if interrupted_twice.len() > log.server_kills.len() {
        explained.fail(format!(
            "{} jobs failed as interrupted twice, after {} server kills: {interrupted_twice:?}",
            interrupted_twice.len(),
            log.server_kills.len()
        ));
    }
    explained.detail = format!(
        "by kind {by_kind:?}; failures: {meant_to_fail} meant to (parse errors), {} engine killed \
         under them {engine_died:?}, {} interrupted twice {interrupted_twice:?}",
        engine_died.len(),
        interrupted_twice.len()
    );
    (explained, interrupted_twice)
}

/// Check 4: no job ran twice.
fn none_ran_twice(
    rows: &Rows<'_>,
    log: &ChaosLog,
    recoveries: &[(u64, u64)],
    interrupted_twice: &[String],
) -> Check {
    let (started_by_epoch, rows) = (&rows.started_by_epoch, rows.all);
    let mut once = Check::new("no job ran twice");
    let requeued: u64 = recoveries.iter().map(|(requeued, _)| requeued).sum();
    let recovery_failed: u64 = recoveries.iter().map(|(_, failed)| failed).sum();
    let mut second_attempts = Vec::new();
    for row in rows {
        if !(1..=2).contains(&row.attempts) {
            once.fail(format!("attempts {}: {}", row.attempts, row.describe()));
        }
        let (Some(started), Some(finished)) = (&row.started_at, &row.finished_at) else {
            once.fail(format!("no start or finish time: {}", row.describe()));
            continue;
        };
        let (start_epoch, finish_epoch) = (
            epoch_of(&log.launches, started),
            epoch_of(&log.launches, finished),
        );
        let twice = row
            .error
            .as_deref()
            .is_some_and(|e| e.contains(INTERRUPTED_TWICE));
        let expected_finish_epoch = if twice { start_epoch + 1 } else { start_epoch };
        if finish_epoch != expected_finish_epoch {
            once.fail(format!(
                "started in server life {start_epoch}, finished in {finish_epoch}: {}",
                row.describe()
            ));
        }
        if row.attempts == 2 {
            second_attempts.push(format!("{} in server life {start_epoch}", row.describe()));
            // Re-queued jobs have lower seqs than every job still queued at the restart, so
            // they are the first jobs started in the next life: no first attempt there may
            // have a lower seq.
            let earlier_first_attempt = started_by_epoch
                .get(&start_epoch)
                .and_then(|jobs| {
                    jobs.iter()
                        .filter(|job| job.attempts == 1 && job.seq < row.seq)
                        .min_by_key(|job| job.seq)
                })
                .map(|job| job.id.as_str());
            if start_epoch == 0 || earlier_first_attempt.is_some() {
                once.fail(format!(
                    "attempt 2 is not among the first jobs started after a restart (server \
                     life {start_epoch}, first attempt {earlier_first_attempt:?} started before \
                     it): {}",
                    row.describe()
                ));
            }
        }
    }
    // A kill interrupts the jobs that were running: one job, or one batch of MeTTa jobs.
    let most_per_kill = log.server_kills.len() * RELIABILITY_MAX_BATCH_JOBS;
    if second_attempts.len() > most_per_kill {
        once.fail(format!(
            "{} jobs have attempts 2 after {} server kills (at most {RELIABILITY_MAX_BATCH_JOBS} \
             running at a time)",
            second_attempts.len(),
            log.server_kills.len()
        ));
    }
    if second_attempts.len() as u64 != requeued {
        once.fail(format!(
            "{} jobs have attempts 2, but start-up recovery re-queued {requeued} ({recoveries:?})",
            second_attempts.len()
        ));
    }
    if interrupted_twice.len() as u64 != recovery_failed {
        once.fail(format!(
            "{} jobs failed as interrupted twice, but recovery failed {recovery_failed}",
            interrupted_twice.len()
        ));
    }
    once.detail = format!(
        "attempts 2: {} (start-up recoveries re-queued {requeued}, failed {recovery_failed}){}",
        second_attempts.len(),
        second_attempts
            .iter()
            .map(|job| format!("\n        {job}"))
            .collect::<String>()
    );
    once
}

/// Check 5: FIFO, precisely. The one worker claims the oldest queued jobs (`min(seq)`, or a batch
/// of MeTTa jobs that is a prefix of the queue, run in `seq` order) and stamps `startedAt` at the
/// claim, one claim at a time, and `seq` is given in commit order, so within one server life a job
/// with a higher `seq` can never start before one with a lower `seq` that was queued then. Across a
/// `kill -9` the jobs that were running (the last claim of its life, so the highest `seq`s started
/// in it) are re-queued by start-up recovery with `startedAt` cleared, and every job still queued
/// has a higher `seq`, so they are the first claims of the next life and their new `startedAt`
/// still lies between those of their `seq` neighbours. Hence the check: over all jobs of the run,
/// sorted by `seq`, `startedAt` is non-decreasing (equal stamps allowed: they have millisecond
/// precision, and a batch shares one), including re-queued attempt-2 jobs; and the `seq` range of
/// the jobs started in each server life lies above the ranges of the lives before it.
fn check_fifo(
    rows: &[StoredJob],
    launches: &[String],
    started_by_epoch: &BTreeMap<usize, Vec<&StoredJob>>,
) -> Check {
    let mut fifo = Check::new("FIFO: jobs start in seq order in every server life and across them");
    let started: Vec<&StoredJob> = rows.iter().filter(|row| row.started_at.is_some()).collect();
    for pair in started.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.started_at > b.started_at {
            fifo.fail(format!(
                "seq {} started after seq {}: {} / {}",
                a.seq,
                b.seq,
                a.describe(),
                b.describe()
            ));
        }
    }
    let mut previous_max = 0;
    let mut ranges = Vec::new();
    for (epoch, jobs) in started_by_epoch {
        let min = jobs.iter().map(|job| job.seq).min().unwrap_or(0);
        let max = jobs.iter().map(|job| job.seq).max().unwrap_or(0);
        if min <= previous_max {
            fifo.fail(format!(
                "server life {epoch} started seq {min}, at or below seq {previous_max} of an \
                 earlier life"
            ));
        }
        previous_max = max;
        ranges.push(format!(
            "life {epoch}: seq {min}..={max} ({} jobs)",
            jobs.len()
        ));
    }
    let second_attempts = started.iter().filter(|row| row.attempts == 2).count();
    fifo.detail = format!(
        "all {} started jobs sorted by seq have non-decreasing startedAt (the {second_attempts} \
         re-queued attempt-2 jobs included, with their second start); {} server lives ({} \
         launches), each starting jobs above the seqs of the lives before it: {}",
        started.len(),
        started_by_epoch.len(),
        launches.len(),
        ranges.join(", ")
    );
    fifo
}

/// Check 6: every session equals a fresh replay of its history.
fn sessions_equal_their_replay(outcomes: &[Outcome], rows: &Rows<'_>, end: &EndState) -> Check {
    let (rows_by_id, rows) = (&rows.by_id, rows.all);
    let (probes, expected_probe_results) = (&end.probes, &end.expected_probe_results);
    let by_id: HashMap<String, &Outcome> = outcomes
        .iter()
        .filter_map(|outcome| Some((str_of(outcome.job.as_ref()?, "id")?, outcome)))
        .collect();
    let mut sessions_check = Check::new("every session equals a fresh replay of its history");
    for problem in &end.unanswered_probes {
        sessions_check.fail(problem.clone());
    }
    let mut exact = 0;
    for (probe_run, direct) in probes.iter().zip(expected_probe_results) {
        let Probe {
            session,
            calls,
            job: probe,
            cells,
            ..
        } = probe_run;
        let name = session_name(*session);
        // The history is exactly the session's succeeded MeTTa jobs, in seq order.
        let mut expected_cells: Vec<&StoredJob> = rows
            .iter()
            .filter(|row| {
                row.session_id.as_deref() == Some(name.as_str())
                    && row.language.as_deref() == Some("metta")
                    && row.status == "succeeded"
                    && Some(row.id.as_str()) != probe["id"].as_str()
            })
            .collect();
        expected_cells.sort_by_key(|row| row.seq);
        let cell_ids: Vec<&str> = cells
            .iter()
            .map(|cell| cell["codeId"].as_str().unwrap_or_default())
            .collect();
        let expected_ids: Vec<&str> = expected_cells.iter().map(|row| row.id.as_str()).collect();
        if cell_ids != expected_ids {
            let missing: Vec<String> = expected_cells
                .iter()
                .filter(|row| !cell_ids.contains(&row.id.as_str()))
                .map(|row| row.describe())
                .collect();
            let extra: Vec<String> = cell_ids
                .iter()
                .filter(|id| !expected_ids.contains(id))
                .map(|id| match rows_by_id.get(id) {
                    Some(row) => row.describe(),
                    None => format!("cell {id} (no such job)"),
                })
                .collect();
            let order = match cell_ids.iter().zip(&expected_ids).position(|(a, b)| a != b) {
                Some(at) if missing.is_empty() && extra.is_empty() => format!(
                    "; the same jobs in another order: cell {at} is job {} where seq order \
                     has job {}",
                    cell_ids[at], expected_ids[at]
                ),
                _ => String::new(),
            };
            sessions_check.fail(format!(
                "{name}: the history ({} cells) is not its {} succeeded jobs in seq order; \
                 missing {missing:?}; extra {extra:?}{order}",
                cell_ids.len(),
                expected_ids.len()
            ));
        }
        for cell in cells {
            let id = cell["codeId"].as_str().unwrap_or_default();
            let Some(outcome) = by_id.get(id) else {
                continue;
            };
            let job = outcome.job.as_ref().expect("final");
            if cell["code"] != job["code"]
                || cell["lastJobId"] != id
                || cell["lastResult"] != job["result"]
            {
                sessions_check.fail(format!("{name}: cell {id} is {cell}, its job is {job}"));
            }
        }
        // The probe equals hyperon's run of the history plus the probe.
        if probe["status"] != "succeeded" {
            sessions_check.fail(format!("{name}: the probe did not succeed: {probe}"));
            continue;
        }
        let result = probe["result"].as_str().unwrap_or_default();
        if result == direct.as_str() {
            exact += 1;
        } else if canonical(result) != canonical(direct) {
            sessions_check.fail(format!(
                "{name}: the probe answered {result:?}, a fresh replay of the history \
                 ({} cells) gives {direct:?}; probe job {probe}",
                cells.len()
            ));
        }
        // ... and what the clients' own record of the session predicts.
        let succeeded: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| {
                o.plan.session == Some(*session)
                    && o.job
                        .as_ref()
                        .is_some_and(|job| job["status"] == "succeeded")
            })
            .collect();
        let atoms: BTreeSet<u64> = succeeded
            .iter()
            .filter(|o| o.plan.adds_atom())
            .map(|o| o.plan.n)
            .collect();
        let definitions: BTreeMap<u64, u64> = succeeded
            .iter()
            .filter_map(|o| Some((o.plan.n, o.plan.defined_value()?)))
            .collect();
        let mut model = vec![
            format!("{:?}", atoms.iter().collect::<Vec<_>>()),
            format!("{:?}", definitions.keys().collect::<Vec<_>>()),
        ];
        for n in calls {
            model.push(match definitions.get(n) {
                Some(value) => format!("[{value}]"),
                None => format!("[({} {n})]", symbol(*session)),
            });
        }
        if canonical(result) != model {
            sessions_check.fail(format!(
                "{name}: the probe answered {:?}, the clients' record predicts {model:?}",
                canonical(result)
            ));
        }
    }
    let cells_total: usize = probes.iter().map(|probe| probe.cells.len()).sum();
    sessions_check.detail = format!(
        "{} sessions, {cells_total} history cells; probes equal to the replay: {exact} \
         exactly, {} up to the order of match results",
        probes.len(),
        probes.len() - exact
    );
    sessions_check
}

/// No answer a client did not expect.
fn no_unexpected_answers(unexpected: &[String]) -> Check {
    let mut answers = Check::new("no unexpected HTTP answers (only 2xx, 503 or no connection)");
    for what in unexpected.iter().take(20) {
        answers.fail(what.clone());
    }
    if unexpected.len() > 20 {
        answers.fail(format!("... and {} more", unexpected.len() - 20));
    }
    answers
}

/// The schedule ran in full, during the load.
fn kills_happened(log: &ChaosLog) -> Check {
    let total = CLIENTS * JOBS_PER_CLIENT;
    let mut chaos_check = Check::new("the kills happened during the load");
    if log.server_kills.len() != SERVER_KILLS || log.engine_kills.len() != ENGINE_KILLS {
        chaos_check.fail(format!(
            "{} of {SERVER_KILLS} server kills and {} of {ENGINE_KILLS} engine kills happened \
             ({} found no engine)",
            log.server_kills.len(),
            log.engine_kills.len(),
            log.engine_misses
        ));
    }
    for (finished, _) in log.server_kills.iter() {
        if *finished >= total {
            chaos_check.fail(format!(
                "a server kill after the load ({finished} finished)"
            ));
        }
    }
    chaos_check.detail = format!(
        "server kills at {:?} finished jobs; engine kills at {:?}",
        log.server_kills.iter().map(|(f, _)| f).collect::<Vec<_>>(),
        log.engine_kills.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    chaos_check
}

/// What the summary prints besides the checks.
pub struct Figures<'a> {
    pub seed: u64,
    pub load_time: Duration,
    pub run_time: Duration,
    pub outcomes: &'a [Outcome],
    pub log: &'a ChaosLog,
    pub counters: &'a Counters,
    pub end: &'a EndState,
}

/// Prints the figures and every check's verdict, and fails unless every check holds.
pub fn report(checks: &[Check], figures: &Figures<'_>) {
    let Figures {
        seed,
        load_time,
        run_time,
        outcomes,
        log,
        counters: c,
        end,
    } = figures;
    let (probes, rows, logs) = (&end.probes, &end.rows, &end.logs);
    let total = CLIENTS * JOBS_PER_CLIENT;
    let accepted_ids = outcomes.iter().filter(|o| !o.ids.is_empty()).count();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        *by_status.entry(row.status.clone()).or_default() += 1;
    }
    let retried_submissions = outcomes.iter().filter(|o| o.submit_attempts > 1).count();
    let kinds: BTreeMap<&str, usize> = outcomes.iter().fold(BTreeMap::new(), |mut map, o| {
        *map.entry(o.plan.kind.name()).or_default() += 1;
        map
    });
    println!();
    println!("===== reliability summary (seed {seed:#x}) =====");
    println!(
        "workload       {CLIENTS} clients x {JOBS_PER_CLIENT} jobs = {total} logical jobs in {SESSIONS} sessions: {kinds:?}"
    );
    println!(
        "duration       load {:.1} s, whole run {:.1} s",
        load_time.as_secs_f64(),
        run_time.as_secs_f64()
    );
    println!(
        "accepted       {accepted_ids} logical jobs (+{} probes); {} rows in the database",
        probes.len(),
        rows.len()
    );
    println!("by status      {by_status:?}");
    println!(
        "kills          server kill -9: {}, restarts: {} (each {:?}); engine kill -9: {} ({} found no engine)",
        log.server_kills.len(),
        log.restart_times.len(),
        log.restart_times
            .iter()
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        log.engine_kills.len(),
        log.engine_misses
    );
    println!(
        "retries        POST retried after: connection errors {}, 503 {}, other {}; logical \
         jobs whose submission was retried {retried_submissions}, {} of them stored by an \
         unanswered attempt and answered by key with it; GET ?wait= retried after: connection \
         errors {}, 503 {}, other {}; long waits that ran out {}; keys re-submitted by a \
         waiting client after losing the server {}, re-submitted after the job finished {}",
        load(&c.submit_connection_errors),
        load(&c.submit_503),
        load(&c.submit_other),
        load(&c.submit_found_stored),
        load(&c.wait_connection_errors),
        load(&c.wait_503),
        load(&c.wait_other),
        load(&c.wait_rounds),
        load(&c.resubmits_after_outage),
        load(&c.resubmits)
    );
    println!("checks");
    let mut failed = Vec::new();
    for check in checks {
        let verdict = if check.problems.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        println!("  [{verdict}] {}", check.name);
        if !check.detail.is_empty() {
            println!("        {}", check.detail);
        }
        for problem in check.problems.iter().take(25) {
            println!("        ! {problem}");
        }
        if check.problems.len() > 25 {
            println!("        ! ... {} more", check.problems.len() - 25);
        }
        if !check.problems.is_empty() {
            failed.push(check.name);
        }
    }
    println!(
        "===== {} of {} checks passed =====",
        checks.len() - failed.len(),
        checks.len()
    );
    if !failed.is_empty() {
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        println!(
            "the servers' last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(failed.is_empty(), "reliability checks failed: {failed:?}");
}
