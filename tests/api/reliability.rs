//! The reliability suite (`#[ignore]`d: minutes of load; run `scripts/reliability.sh`).
//!
//! 200 concurrent clients submit 20 jobs each (MeTTa jobs in 20 sessions, some Python jobs,
//! a few MeTTa jobs that are meant to fail) while the server is `kill -9`ed and restarted five
//! times and its engine child is `kill -9`ed eight times, at progress points and delays drawn
//! from a fixed-seed generator (`RELIABILITY_SEED` overrides the seed). A client behaves like
//! a careful browser: it submits with an `Idempotency-Key` unique to the logical job and
//! retries through connection errors and `503` with a short backoff until the job is
//! accepted, then long-waits (`?wait=`) for the final state, retrying through restarts. Half
//! the clients also re-submit the key when the server is back after an outage (as a reloaded
//! browser would), and one job in ten has its key re-submitted once it finished: every such
//! answer must be the same job.
//!
//! At the end it prints its figures and checks, and fails unless all hold:
//!
//! 1. accepted once: every logical job was accepted, every idempotency key maps to exactly
//!    one job id (in every answer the client got, and as exactly one row in the database,
//!    which holds no other jobs);
//! 2. one final state: every job is final, and the final state a client first saw (status,
//!    result, attempts, startedAt, finishedAt) is the one stored at the end; a deliberate
//!    re-submission of a finished job's key returns that same job;
//! 3. outcomes explained: each succeeded job's result is the one its code must give; each
//!    failed job either was meant to fail (a parse error), or was running when the suite
//!    killed the engine (at most one per engine kill), or was interrupted by two server
//!    kills; nothing timed out or was cancelled;
//! 4. none ran twice: attempts is 1 or 2; a job with attempts 2 was running when the server
//!    was killed (alone, or in a batch of MeTTa jobs): it is among the first jobs started
//!    after the following restart (no first attempt with a lower seq started before it in
//!    that life; at most `RELIABILITY_MAX_BATCH_JOBS` per kill; as many as the servers'
//!    recovery log lines re-queued), and every job's single successful attempt started and
//!    finished within one server life;
//! 5. FIFO: jobs sorted by `seq` have non-decreasing `startedAt` over the whole run, across
//!    restarts, re-queued attempt-2 jobs included (see `check_fifo` for why that holds and
//!    what exactly is compared);
//! 6. sessions equal their replay: each session's history is exactly its succeeded MeTTa jobs
//!    in `seq` order (code, lastJobId and lastResult theirs; no failed job in it), and a probe
//!    job run in the session gives what hyperon prints for the history plus the probe in a
//!    fresh `MeTTa()`, and what the clients' own model of the session predicts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    bang_count, direct_hyperon_run, is_final, last_lines, stored_jobs, Rng, StoredJob, TestServer,
};

// ----- the scale of the run ---------------------------------------------------------------------

const CLIENTS: usize = 200;
const JOBS_PER_CLIENT: usize = 20;
const SESSIONS: usize = 20;
const SERVER_KILLS: usize = 5;
/// `MAX_BATCH_JOBS` of the server: the most jobs running at once, so the most one kill can
/// interrupt.
const RELIABILITY_MAX_BATCH_JOBS: usize = 16;
const ENGINE_KILLS: usize = 8;
/// The default seed of the workload and the kill schedule (`RELIABILITY_SEED` overrides it).
const DEFAULT_SEED: u64 = 0x5EED_0F4E_11AB_1E00;
/// `?wait=` of each long-wait request, in seconds.
const WAIT_SECS: u64 = 20;
/// A client gives a logical job up (and the run fails) after this long without an answer.
const GIVE_UP: Duration = Duration::from_secs(300);
/// Kills happen between these fractions (in percent) of the finished logical jobs.
const KILL_WINDOW_PERCENT: (usize, usize) = (5, 90);

/// The error a MeTTa job gets when the engine dies under it.
const ENGINE_DIED: &str = metta_learner_backend::learner_messages::ENGINE_DIED;
/// The error start-up recovery gives a job interrupted twice (src/store/mod.rs).
const INTERRUPTED_TWICE: &str = "interrupted by restart (twice)";
/// The log line of start-up recovery (src/app.rs).
const RECOVERY_LOG: &str = "recovered jobs interrupted by the previous stop";

fn seed() -> u64 {
    match std::env::var("RELIABILITY_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("RELIABILITY_SEED {text:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// Now, as the service writes timestamps (RFC 3339, UTC, milliseconds): text order is time order.
fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ----- the workload -----------------------------------------------------------------------------

/// What a logical job does; each kind's result is independent of the order jobs run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `print(n * 7)` in Python.
    Python,
    /// An unbalanced MeTTa expression: fails with a parse error, never enters the history.
    BadMetta,
    /// `(= (vS n) (+ n 1))`: a definition, no result lines.
    Define,
    /// `(= (vS n) (* n 2))` and a call of it.
    DefineCall,
    /// `!(add-atom &self (k n))`.
    Add,
    /// `!(add-atom &self (k n))` and a match that finds it.
    AddMatch,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::BadMetta => "metta-parse-error",
            Kind::Define => "metta-define",
            Kind::DefineCall => "metta-define-call",
            Kind::Add => "metta-add-atom",
            Kind::AddMatch => "metta-add-match",
        }
    }
}

/// One logical job of one client.
#[derive(Debug, Clone)]
struct Plan {
    client: usize,
    /// Unique over the run: the number the job's code is about.
    n: u64,
    /// The session of a MeTTa job.
    session: Option<usize>,
    kind: Kind,
    code: String,
    key: String,
    /// After its final state, submit the same key again (it must return the same job).
    resubmit: bool,
}

fn session_name(session: usize) -> String {
    format!("rel-s{session:02}")
}

/// The function symbol of a session: distinct per session, so a leak between sessions shows.
fn symbol(session: usize) -> String {
    format!("v{session}")
}

impl Plan {
    fn body(&self) -> Value {
        match self.session {
            Some(session) => json!({
                "language": "metta",
                "code": self.code,
                "sessionId": session_name(session),
            }),
            None => json!({"language": "python", "code": self.code}),
        }
    }

    /// The result a succeeded run must have (`None`: the job must fail).
    fn expected_result(&self) -> Option<String> {
        let n = self.n;
        match self.kind {
            Kind::Python => Some(format!("{}\n", n * 7)),
            Kind::BadMetta => None,
            Kind::Define => Some(String::new()),
            Kind::DefineCall => Some(format!("[{}]\n", n * 2)),
            Kind::Add => Some("[()]\n".to_string()),
            Kind::AddMatch => Some("[()]\n[found]\n".to_string()),
        }
    }

    /// What `(vS n)` is once this job succeeded (definitions only).
    fn defined_value(&self) -> Option<u64> {
        match self.kind {
            Kind::Define => Some(self.n + 1),
            Kind::DefineCall => Some(self.n * 2),
            _ => None,
        }
    }

    fn adds_atom(&self) -> bool {
        matches!(self.kind, Kind::Add | Kind::AddMatch)
    }
}

fn make_plans(rng: &mut Rng, seed: u64) -> Vec<Vec<Plan>> {
    (0..CLIENTS)
        .map(|client| {
            let session = client % SESSIONS;
            let f = symbol(session);
            (0..JOBS_PER_CLIENT)
                .map(|index| {
                    let n = (client * JOBS_PER_CLIENT + index) as u64;
                    let roll = rng.below(100);
                    let kind = match roll {
                        0..=9 => Kind::Python,
                        10..=11 => Kind::BadMetta,
                        12..=33 => Kind::Define,
                        34..=55 => Kind::DefineCall,
                        56..=77 => Kind::Add,
                        _ => Kind::AddMatch,
                    };
                    let code = match kind {
                        Kind::Python => format!("print({n} * 7)"),
                        Kind::BadMetta => format!("!({f} {n}"),
                        Kind::Define => format!("(= ({f} {n}) (+ {n} 1))"),
                        Kind::DefineCall => format!("(= ({f} {n}) (* {n} 2))\n!({f} {n})"),
                        Kind::Add => format!("!(add-atom &self (k {n}))"),
                        Kind::AddMatch => {
                            format!("!(add-atom &self (k {n}))\n!(match &self (k {n}) found)")
                        }
                    };
                    Plan {
                        client,
                        n,
                        session: (kind != Kind::Python).then_some(session),
                        kind,
                        code,
                        key: format!("rel-{seed:x}-c{client}-j{index}"),
                        resubmit: rng.below(100) < 10,
                    }
                })
                .collect()
        })
        .collect()
}

// ----- what the clients share -------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    submit_connection_errors: AtomicU64,
    submit_503: AtomicU64,
    submit_other: AtomicU64,
    /// Logical jobs whose first submission got no answer but had been stored: the retry was
    /// answered, by its key, with that job.
    submit_found_stored: AtomicU64,
    wait_connection_errors: AtomicU64,
    wait_503: AtomicU64,
    wait_other: AtomicU64,
    /// Long waits that ended before the job was final (the job was still queued).
    wait_rounds: AtomicU64,
    resubmits: AtomicU64,
    /// Re-submissions of a waiting job's key after its client lost the server.
    resubmits_after_outage: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

struct Shared {
    client: reqwest::Client,
    /// The running server's base URL (each restart picks a new port).
    base: RwLock<String>,
    /// Logical jobs whose final state a client has seen: the kill schedule's clock.
    finished: AtomicUsize,
    counters: Counters,
    /// Answers no client expects (a 500, a 404 for an accepted job, a body that is not JSON).
    unexpected: Mutex<Vec<String>>,
    /// Set when the chaos thread dies: clients give up instead of waiting for a server.
    abort: AtomicBool,
}

impl Shared {
    fn base(&self) -> String {
        self.base.read().unwrap().clone()
    }

    fn note_unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }
}

/// One HTTP exchange with the current server: status and body (JSON, or the text as a JSON
/// string), or why there was no answer (refused, reset, timed out).
async fn exchange(
    shared: &Shared,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.base()));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|err| format!("{err:?}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|err| format!("{err:?}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn backoff(rng: &mut Rng, attempt: u32) {
    let base = 25u64 << attempt.min(4);
    tokio::time::sleep(Duration::from_millis(base + rng.below(50))).await;
}

/// Submits until the service accepts (200/202 with a job); `None` after `GIVE_UP`.
/// Returns the job, the number of attempts, and whether the answer was a job stored before
/// the answered attempt was sent (by an earlier attempt that got no answer).
async fn submit_until_accepted(
    shared: &Shared,
    rng: &mut Rng,
    key: &str,
    body: &Value,
) -> (Option<Value>, u32, bool) {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent_at = now_timestamp();
        match exchange(
            shared,
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(key),
            Some(body),
        )
        .await
        {
            Ok((200 | 202, job)) if job["id"].is_string() => {
                let stored_before = job["createdAt"].as_str().is_some_and(|at| *at < *sent_at);
                return (Some(job), attempt, stored_before);
            }
            Ok((503, _)) => bump(&shared.counters.submit_503),
            Ok((status, answer)) => {
                bump(&shared.counters.submit_other);
                shared.note_unexpected(format!(
                    "POST /api/v1/jobs (key {key}) answered {status}: {answer}"
                ));
            }
            Err(_) => bump(&shared.counters.submit_connection_errors),
        }
        if started.elapsed() > GIVE_UP || shared.abort.load(Ordering::Relaxed) {
            return (None, attempt, false);
        }
        backoff(rng, attempt).await;
    }
}

/// A client that re-submits its job's key when the server comes back after an outage (as a
/// browser that reloaded would), instead of only asking for the job by id.
struct ResubmitAfterOutage<'a> {
    key: &'a str,
    body: &'a Value,
    /// Every distinct job id the re-submissions were answered with.
    ids: Vec<String>,
}

/// Long-waits for a job's final state through restarts; `None` after `GIVE_UP`.
async fn wait_until_final(
    shared: &Shared,
    rng: &mut Rng,
    id: &str,
    mut resubmit: Option<&mut ResubmitAfterOutage<'_>>,
) -> Option<Value> {
    let started = Instant::now();
    let path = format!("/api/v1/jobs/{id}?wait={WAIT_SECS}");
    let mut failures = 0;
    let mut outage = false;
    loop {
        match exchange(shared, reqwest::Method::GET, &path, None, None).await {
            Ok((200, job)) if is_final(&job) => return Some(job),
            Ok((200, job)) if job["id"] == id => {
                bump(&shared.counters.wait_rounds);
                failures = 0;
            }
            Ok((503, _)) => {
                bump(&shared.counters.wait_503);
                failures += 1;
            }
            Ok((status, answer)) => {
                bump(&shared.counters.wait_other);
                shared.note_unexpected(format!("GET {path} answered {status}: {answer}"));
                failures += 1;
            }
            Err(_) => {
                bump(&shared.counters.wait_connection_errors);
                failures += 1;
                outage = true;
            }
        }
        if started.elapsed() > GIVE_UP || shared.abort.load(Ordering::Relaxed) {
            return None;
        }
        if failures > 0 {
            backoff(rng, failures).await;
        }
        if let Some(again) = resubmit.as_deref_mut().filter(|_| outage) {
            outage = false;
            bump(&shared.counters.resubmits_after_outage);
            let (answer, _, _) = submit_until_accepted(shared, rng, again.key, again.body).await;
            if let Some(answer_id) = answer.as_ref().and_then(|job| str_of(job, "id")) {
                if !again.ids.contains(&answer_id) {
                    again.ids.push(answer_id);
                }
            }
        }
    }
}

/// What happened to one logical job, as its client saw it.
#[derive(Debug)]
struct Outcome {
    plan: Plan,
    /// Every distinct job id the service answered for the key (exactly one is right).
    ids: Vec<String>,
    /// The final state, as first seen.
    job: Option<Value>,
    submit_attempts: u32,
    /// The answer to a re-submission of the key after the job finished.
    resubmitted: Option<Value>,
}

async fn run_client(shared: Arc<Shared>, plans: Vec<Plan>, seed: u64) -> Vec<Outcome> {
    let mut rng = Rng(seed ^ (plans[0].client as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut outcomes = Vec::new();
    for plan in plans {
        let body = plan.body();
        let (accepted, submit_attempts, stored_before) =
            submit_until_accepted(&shared, &mut rng, &plan.key, &body).await;
        if submit_attempts > 1 && stored_before {
            bump(&shared.counters.submit_found_stored);
        }
        let mut ids = Vec::new();
        let mut job = None;
        let mut resubmitted = None;
        if let Some(accepted) = accepted {
            let id = accepted["id"].as_str().unwrap_or_default().to_string();
            ids.push(id.clone());
            // Half the clients re-submit their key after an outage, half only wait by id.
            let mut after_outage = ResubmitAfterOutage {
                key: &plan.key,
                body: &body,
                ids: Vec::new(),
            };
            let resubmit = (plan.client % 2 == 1).then_some(&mut after_outage);
            job = if is_final(&accepted) {
                Some(accepted)
            } else {
                wait_until_final(&shared, &mut rng, &id, resubmit).await
            };
            for other in after_outage.ids {
                if !ids.contains(&other) {
                    ids.push(other);
                }
            }
            if job.is_some() && plan.resubmit {
                bump(&shared.counters.resubmits);
                let (again, _, _) =
                    submit_until_accepted(&shared, &mut rng, &plan.key, &body).await;
                if let Some(again) = &again {
                    let again_id = again["id"].as_str().unwrap_or_default().to_string();
                    if !ids.contains(&again_id) {
                        ids.push(again_id);
                    }
                }
                resubmitted = again;
            }
        }
        shared.finished.fetch_add(1, Ordering::SeqCst);
        outcomes.push(Outcome {
            plan,
            ids,
            job,
            submit_attempts,
            resubmitted,
        });
    }
    outcomes
}

// ----- the chaos thread -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chaos {
    KillServer,
    KillEngine,
}

#[derive(Debug, Clone)]
struct ChaosEvent {
    /// Fire once this many logical jobs are finished...
    at_finished: usize,
    /// ... and this many milliseconds more have passed.
    jitter_ms: u64,
    what: Chaos,
}

fn chaos_schedule(rng: &mut Rng, total: usize) -> Vec<ChaosEvent> {
    let (low, high) = (
        total * KILL_WINDOW_PERCENT.0 / 100,
        total * KILL_WINDOW_PERCENT.1 / 100,
    );
    let mut events: Vec<ChaosEvent> = std::iter::repeat_n(Chaos::KillServer, SERVER_KILLS)
        .chain(std::iter::repeat_n(Chaos::KillEngine, ENGINE_KILLS))
        .map(|what| ChaosEvent {
            at_finished: low + rng.below((high - low) as u64) as usize,
            jitter_ms: rng.below(400),
            what,
        })
        .collect();
    events.sort_by_key(|event| event.at_finished);
    events
}

#[derive(Debug, Default)]
struct ChaosLog {
    /// When each server life began (taken just before starting it): index = epoch.
    launches: Vec<String>,
    /// (finished logical jobs, time taken just after the server was dead) per server kill.
    server_kills: Vec<(usize, String)>,
    /// (finished logical jobs, engine pid) per engine kill delivered.
    engine_kills: Vec<(usize, u32)>,
    /// Engine kills that found no engine to kill within 5 s.
    engine_misses: usize,
    /// How long each restart took until the server listened.
    restart_times: Vec<Duration>,
}

/// Sets `abort` if the chaos thread panics, so clients stop waiting for a server.
struct AbortOnPanic(Arc<Shared>);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort.store(true, Ordering::SeqCst);
        }
    }
}

fn run_chaos(
    mut server: TestServer,
    shared: Arc<Shared>,
    events: Vec<ChaosEvent>,
    done: Arc<AtomicBool>,
    mut log: ChaosLog,
) -> (TestServer, ChaosLog) {
    let _guard = AbortOnPanic(shared.clone());
    let mut next = 0;
    loop {
        let finished = shared.finished.load(Ordering::SeqCst);
        if let Some(event) = events.get(next).filter(|e| finished >= e.at_finished) {
            std::thread::sleep(Duration::from_millis(event.jitter_ms));
            let finished = shared.finished.load(Ordering::SeqCst);
            match event.what {
                Chaos::KillServer => {
                    server.kill9();
                    log.server_kills.push((finished, now_timestamp()));
                    // Keep the next life's timestamps apart from the last one's.
                    std::thread::sleep(Duration::from_millis(5));
                    log.launches.push(now_timestamp());
                    let restarting = Instant::now();
                    server.restart();
                    log.restart_times.push(restarting.elapsed());
                    *shared.base.write().unwrap() = server.base.clone();
                }
                Chaos::KillEngine => {
                    let looking = Instant::now();
                    loop {
                        if let Some(pid) = server.engine_pid() {
                            // SAFETY: a signal to the engine child of the server this test started.
                            if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                                log.engine_kills.push((finished, pid));
                                break;
                            }
                        }
                        if looking.elapsed() > Duration::from_secs(5) {
                            log.engine_misses += 1;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            next += 1;
            continue;
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (server, log)
}

// ----- the end state ----------------------------------------------------------------------------

/// (re-queued, failed) of every start-up recovery the servers logged.
fn recoveries_in(logs: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .and_then(|value| {
                value
                    .trim_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    logs.lines()
        .filter(|line| line.contains(RECOVERY_LOG))
        .map(|line| (field(line, "requeued="), field(line, "failed=")))
        .collect()
}

/// The server life (0 = the first) a timestamp falls in.
fn epoch_of(launches: &[String], at: &str) -> usize {
    launches
        .iter()
        .rposition(|launch| launch.as_str() <= at)
        .unwrap_or(0)
}

// ----- the probe --------------------------------------------------------------------------------

/// The probe of a session: its `k` atoms, the arguments its `vS` is defined for, and three calls.
fn probe_code(session: usize, calls: &[u64]) -> String {
    let f = symbol(session);
    let mut code = format!(
        "!(collapse (match &self (k $x) $x))\n!(collapse (match &self (= ({f} $n) $body) $n))"
    );
    for n in calls {
        code.push_str(&format!("\n!({f} {n})"));
    }
    code
}

/// A result's lines with the atoms of each `[(a b c)]` line sorted: the order `match` yields
/// atoms in is hyperon's business, the set is the session's.
fn canonical(result: &str) -> Vec<String> {
    result
        .lines()
        .map(|line| match numbers_of(line) {
            Some(mut atoms) => {
                atoms.sort_unstable();
                format!("{atoms:?}")
            }
            None => line.to_string(),
        })
        .collect()
}

/// The atoms of a `[(a b c)]` result line (`[()]`: none), or `None` for another shape.
fn numbers_of(line: &str) -> Option<Vec<u64>> {
    let inner = line.strip_prefix("[(")?.strip_suffix(")]")?;
    inner
        .split_whitespace()
        .map(|atom| atom.parse().ok())
        .collect()
}

/// A session's probe job and what it was compared with.
struct Probe {
    session: usize,
    key: String,
    code: String,
    /// The arguments of the probe's calls of the session's function.
    calls: Vec<u64>,
    /// The probe job, final.
    job: Value,
    /// The session's history just before the probe.
    cells: Vec<Value>,
}

// ----- checks -----------------------------------------------------------------------------------

struct Check {
    name: &'static str,
    problems: Vec<String>,
    detail: String,
}

impl Check {
    fn new(name: &'static str) -> Check {
        Check {
            name,
            problems: Vec::new(),
            detail: String::new(),
        }
    }

    fn fail(&mut self, problem: String) {
        self.problems.push(problem);
    }
}

fn str_of(job: &Value, field: &str) -> Option<String> {
    job[field].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the reliability suite: minutes of load with kills; run scripts/reliability.sh"]
async fn reliability_under_load_with_server_and_engine_kills() {
    let run_started = Instant::now();
    let seed = seed();
    let mut rng = Rng(seed);
    let plans = make_plans(&mut rng, seed);
    let total = CLIENTS * JOBS_PER_CLIENT;
    let events = chaos_schedule(&mut rng, total);
    println!(
        "reliability: seed {seed:#x}; {CLIENTS} clients x {JOBS_PER_CLIENT} jobs in {SESSIONS} sessions; \
         {SERVER_KILLS} server kills and {ENGINE_KILLS} engine kills at finished-job counts {:?}",
        events
            .iter()
            .map(|e| format!(
                "{}{}+{}ms",
                match e.what {
                    Chaos::KillServer => "server@",
                    Chaos::KillEngine => "engine@",
                },
                e.at_finished,
                e.jitter_ms
            ))
            .collect::<Vec<_>>()
    );

    // ----- Arrange: the server and the shared client state.
    let mut log = ChaosLog::default();
    log.launches.push(now_timestamp());
    let server = TestServer::start_with(&[
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("MAX_QUEUED_JOBS", "10000"),
        ("MAX_BATCH_JOBS", &RELIABILITY_MAX_BATCH_JOBS.to_string()),
    ])
    .await;
    let shared = Arc::new(Shared {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(WAIT_SECS + 25))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("client"),
        base: RwLock::new(server.base.clone()),
        finished: AtomicUsize::new(0),
        counters: Counters::default(),
        unexpected: Mutex::new(Vec::new()),
        abort: AtomicBool::new(false),
    });
    let done = Arc::new(AtomicBool::new(false));

    // ----- Act: the load, and the kills during it.
    let chaos = {
        let (shared, done) = (shared.clone(), done.clone());
        std::thread::spawn(move || run_chaos(server, shared, events, done, log))
    };
    let load_started = Instant::now();
    let clients: Vec<_> = plans
        .into_iter()
        .map(|plans| tokio::spawn(run_client(shared.clone(), plans, seed)))
        .collect();
    let mut outcomes = Vec::with_capacity(total);
    for client in clients {
        outcomes.extend(client.await.expect("a client task panicked"));
    }
    let load_time = load_started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (mut server, log) = tokio::task::spawn_blocking(move || chaos.join())
        .await
        .expect("join")
        .unwrap_or_else(|_| panic!("the chaos thread panicked (a restart failed?)"));

    // ----- The end state: the queue, the sessions and their probes.
    let client = &shared.client;
    let base = server.base.clone();
    let queue: Value = client
        .get(format!("{base}/api/v1/queue"))
        .send()
        .await
        .expect("GET /api/v1/queue")
        .json()
        .await
        .expect("queue JSON");

    let by_id: HashMap<String, &Outcome> = outcomes
        .iter()
        .filter_map(|outcome| Some((str_of(outcome.job.as_ref()?, "id")?, outcome)))
        .collect();
    let mut sessions_check = Check::new("every session equals a fresh replay of its history");
    let mut probes: Vec<Probe> = Vec::new();
    for session in 0..SESSIONS {
        let name = session_name(session);
        let history: Value = match client
            .get(format!("{base}/api/v1/sessions/{name}"))
            .send()
            .await
            .expect("GET session")
        {
            response if response.status().as_u16() == 404 => json!({"cells": []}),
            response => response.json().await.expect("session JSON"),
        };
        let cells = history["cells"].as_array().cloned().unwrap_or_default();
        // Three calls: two planned definitions of the session and one number it never defined.
        let planned: Vec<u64> = outcomes
            .iter()
            .filter(|o| o.plan.session == Some(session) && o.plan.defined_value().is_some())
            .map(|o| o.plan.n)
            .collect();
        let mut calls: Vec<u64> = (0..2)
            .filter_map(|_| {
                planned
                    .get(rng.below(planned.len() as u64) as usize)
                    .copied()
            })
            .collect();
        calls.push(total as u64 + session as u64);
        let code = probe_code(session, &calls);
        let key = format!("rel-{seed:x}-probe-{session}");
        let body = json!({"language": "metta", "code": code, "sessionId": name});
        let mut probe_rng = Rng(seed ^ session as u64);
        let (accepted, _, _) = submit_until_accepted(&shared, &mut probe_rng, &key, &body).await;
        let probe = match accepted {
            Some(job) if is_final(&job) => Some(job),
            Some(job) => {
                let id = str_of(&job, "id").unwrap_or_default();
                wait_until_final(&shared, &mut probe_rng, &id, None).await
            }
            None => None,
        };
        match probe {
            Some(job) => probes.push(Probe {
                session,
                key,
                code,
                calls,
                job,
                cells,
            }),
            None => sessions_check.fail(format!("the probe of {name} was not answered")),
        }
    }
    // The references: hyperon directly, history + probe in one fresh MeTTa(), in parallel.
    let references: Vec<_> = probes
        .iter()
        .map(|Probe { code, cells, .. }| {
            let mut program: String = cells
                .iter()
                .map(|cell| format!("{}\n", cell["code"].as_str().unwrap_or_default()))
                .collect();
            program.push_str(code);
            let lines = bang_count(code);
            tokio::task::spawn_blocking(move || last_lines(&direct_hyperon_run(&program), lines))
        })
        .collect();
    let mut expected_probe_results = Vec::new();
    for reference in references {
        expected_probe_results.push(reference.await.expect("direct hyperon run"));
    }

    server.kill9();
    let rows = stored_jobs(&server).await;
    let logs = server.logs();
    let recoveries = recoveries_in(&logs);

    // ----- Assert: the checks.
    let mut checks = Vec::new();
    let mut rows_by_id: HashMap<&str, &StoredJob> = HashMap::new();
    for row in &rows {
        rows_by_id.insert(row.id.as_str(), row);
    }
    let mut rows_by_key: HashMap<&str, Vec<&StoredJob>> = HashMap::new();
    for row in &rows {
        if let Some(key) = &row.key {
            rows_by_key.entry(key.as_str()).or_default().push(row);
        }
    }

    // 1. Accepted exactly once.
    let mut accepted = Check::new("every logical job was accepted exactly once");
    let mut known_keys: BTreeSet<&str> = BTreeSet::new();
    for outcome in &outcomes {
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
    for probe in &probes {
        known_keys.insert(probe.key.as_str());
    }
    for row in &rows {
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
    checks.push(accepted);

    // 2. One final state.
    let mut final_check = Check::new("every job reached exactly one final state");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        *by_status.entry(row.status.clone()).or_default() += 1;
        if !matches!(
            row.status.as_str(),
            "succeeded" | "failed" | "timed_out" | "cancelled"
        ) {
            final_check.fail(format!("not final at the end: {}", row.describe()));
        }
    }
    for outcome in &outcomes {
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
    checks.push(final_check);

    // 3. Outcomes explained.
    let mut explained = Check::new("every outcome is the one its code must give, or explained");
    let mut engine_died = Vec::new();
    let mut interrupted_twice = Vec::new();
    let mut meant_to_fail = 0;
    let mut by_kind: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for outcome in &outcomes {
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
    checks.push(explained);

    // 4. None ran twice.
    let mut once = Check::new("no job ran twice");
    let requeued: u64 = recoveries.iter().map(|(requeued, _)| requeued).sum();
    let recovery_failed: u64 = recoveries.iter().map(|(_, failed)| failed).sum();
    let mut second_attempts = Vec::new();
    let mut started_by_epoch: BTreeMap<usize, Vec<&StoredJob>> = BTreeMap::new();
    for row in &rows {
        if let Some(started) = &row.started_at {
            started_by_epoch
                .entry(epoch_of(&log.launches, started))
                .or_default()
                .push(row);
        }
    }
    for row in &rows {
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
    checks.push(once);

    // 5. FIFO.
    checks.push(check_fifo(&rows, &log.launches, &started_by_epoch));

    // 6. Sessions equal their replay.
    let mut exact = 0;
    for (probe_run, direct) in probes.iter().zip(&expected_probe_results) {
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
    checks.push(sessions_check);

    // No answer a client did not expect.
    let unexpected = shared.unexpected.lock().unwrap().clone();
    let mut answers = Check::new("no unexpected HTTP answers (only 2xx, 503 or no connection)");
    for what in unexpected.iter().take(20) {
        answers.fail(what.clone());
    }
    if unexpected.len() > 20 {
        answers.fail(format!("... and {} more", unexpected.len() - 20));
    }
    checks.push(answers);

    // The schedule ran in full.
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
    checks.push(chaos_check);

    // ----- The summary.
    let c = &shared.counters;
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
        run_started.elapsed().as_secs_f64()
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
    for check in &checks {
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

/// FIFO, precisely. The one worker claims the oldest queued jobs (`min(seq)`, or a batch of
/// MeTTa jobs that is a prefix of the queue, run in `seq` order) and stamps `startedAt` at the
/// claim, one claim at a time, and `seq` is given in commit order, so within one server life a
/// job with a higher `seq` can never start before one with a lower `seq` that was queued then.
/// Across a `kill -9` the jobs that were running (the last claim of its life, so the highest
/// `seq`s started in it) are re-queued by start-up recovery with `startedAt` cleared, and every
/// job still queued has a higher `seq`, so they are the first claims of the next life and their
/// new `startedAt` still lies between those of their `seq` neighbours. Hence the check: over
/// all jobs of the run, sorted by `seq`, `startedAt` is non-decreasing (equal stamps allowed:
/// they have millisecond precision, and a batch shares one), including re-queued attempt-2
/// jobs; and the `seq` range of the jobs started in each server life lies above the ranges of
/// the lives before it.
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
