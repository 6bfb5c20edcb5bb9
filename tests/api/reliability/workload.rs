//! The workload: what each client submits (its plans), and a client that behaves like a
//! careful browser through restarts (idempotency keys, retries with backoff, long waits).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{CLIENTS, GIVE_UP, JOBS_PER_CLIENT, SESSIONS, WAIT_SECS};
use crate::support::{is_final, now_timestamp, Rng};

/// What a logical job does; each kind's result is independent of the order jobs run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
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
    pub fn name(self) -> &'static str {
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
pub struct Plan {
    pub client: usize,
    /// Unique over the run: the number the job's code is about.
    pub n: u64,
    /// The session of a MeTTa job.
    pub session: Option<usize>,
    pub kind: Kind,
    pub code: String,
    pub key: String,
    /// After its final state, submit the same key again (it must return the same job).
    pub resubmit: bool,
}

pub fn session_name(session: usize) -> String {
    format!("rel-s{session:02}")
}

/// The function symbol of a session: distinct per session, so a leak between sessions shows.
pub fn symbol(session: usize) -> String {
    format!("v{session}")
}

impl Plan {
    pub fn body(&self) -> Value {
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
    pub fn expected_result(&self) -> Option<String> {
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
    pub fn defined_value(&self) -> Option<u64> {
        match self.kind {
            Kind::Define => Some(self.n + 1),
            Kind::DefineCall => Some(self.n * 2),
            _ => None,
        }
    }

    pub fn adds_atom(&self) -> bool {
        matches!(self.kind, Kind::Add | Kind::AddMatch)
    }
}

pub fn make_plans(rng: &mut Rng, seed: u64) -> Vec<Vec<Plan>> {
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
pub struct Counters {
    pub submit_connection_errors: AtomicU64,
    pub submit_503: AtomicU64,
    pub submit_other: AtomicU64,
    /// Logical jobs whose first submission got no answer but had been stored: the retry was
    /// answered, by its key, with that job.
    pub submit_found_stored: AtomicU64,
    pub wait_connection_errors: AtomicU64,
    pub wait_503: AtomicU64,
    pub wait_other: AtomicU64,
    /// Long waits that ended before the job was final (the job was still queued).
    pub wait_rounds: AtomicU64,
    pub resubmits: AtomicU64,
    /// Re-submissions of a waiting job's key after its client lost the server.
    pub resubmits_after_outage: AtomicU64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

pub struct Shared {
    pub client: reqwest::Client,
    /// The running server's base URL (each restart picks a new port).
    pub base: RwLock<String>,
    /// Logical jobs whose final state a client has seen: the kill schedule's clock.
    pub finished: AtomicUsize,
    pub counters: Counters,
    /// Answers no client expects (a 500, a 404 for an accepted job, a body that is not JSON).
    pub unexpected: Mutex<Vec<String>>,
    /// Set when the chaos thread dies: clients give up instead of waiting for a server.
    pub abort: AtomicBool,
}

impl Shared {
    pub fn base(&self) -> String {
        self.base.read().unwrap().clone()
    }

    pub fn note_unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }
}

/// One HTTP exchange with the current server: status and body (JSON, or the text as a JSON
/// string), or why there was no answer (refused, reset, timed out).
pub async fn exchange(
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

pub async fn backoff(rng: &mut Rng, attempt: u32) {
    let base = 25u64 << attempt.min(4);
    tokio::time::sleep(Duration::from_millis(base + rng.below(50))).await;
}

/// Submits until the service accepts (200/202 with a job); `None` after `GIVE_UP`.
/// Returns the job, the number of attempts, and whether the answer was a job stored before
/// the answered attempt was sent (by an earlier attempt that got no answer).
pub async fn submit_until_accepted(
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
pub struct ResubmitAfterOutage<'a> {
    key: &'a str,
    body: &'a Value,
    /// Every distinct job id the re-submissions were answered with.
    ids: Vec<String>,
}

/// Long-waits for a job's final state through restarts; `None` after `GIVE_UP`.
pub async fn wait_until_final(
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
pub struct Outcome {
    pub plan: Plan,
    /// Every distinct job id the service answered for the key (exactly one is right).
    pub ids: Vec<String>,
    /// The final state, as first seen.
    pub job: Option<Value>,
    pub submit_attempts: u32,
    /// The answer to a re-submission of the key after the job finished.
    pub resubmitted: Option<Value>,
}

pub async fn run_client(shared: Arc<Shared>, plans: Vec<Plan>, seed: u64) -> Vec<Outcome> {
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

/// A string field of a job JSON.
pub fn str_of(job: &Value, field: &str) -> Option<String> {
    job[field].as_str().map(str::to_string)
}
