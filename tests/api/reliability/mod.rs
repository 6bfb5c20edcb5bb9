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
//!
//! The suite reads in four parts: `workload` (the clients and what they submit), `faults`
//! (the kill schedule and the thread that carries it out), `end_state` (what is read once the
//! load is over: the queue, a probe per session and hyperon's reference, the stored jobs and
//! the servers' logs) and `checks` (one function per numbered check above, and the report).

mod checks;
mod end_state;
mod faults;
mod workload;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::support::{now_timestamp, Rng, TestServer};

use faults::{chaos_schedule, run_chaos, Chaos, ChaosEvent, ChaosLog};
use workload::{make_plans, run_client, Counters, Outcome, Plan, Shared};

// ----- the scale of the run ---------------------------------------------------------------------

pub const CLIENTS: usize = 200;
pub const JOBS_PER_CLIENT: usize = 20;
pub const SESSIONS: usize = 20;
pub const SERVER_KILLS: usize = 5;
/// `MAX_BATCH_JOBS` of the server: the most jobs running at once, so the most one kill can
/// interrupt.
pub const RELIABILITY_MAX_BATCH_JOBS: usize = 16;
pub const ENGINE_KILLS: usize = 8;
/// The default seed of the workload and the kill schedule (`RELIABILITY_SEED` overrides it).
const DEFAULT_SEED: u64 = 0x5EED_0F4E_11AB_1E00;
/// `?wait=` of each long-wait request, in seconds.
pub const WAIT_SECS: u64 = 20;
/// A client gives a logical job up (and the run fails) after this long without an answer.
pub const GIVE_UP: Duration = Duration::from_secs(300);
/// Kills happen between these fractions (in percent) of the finished logical jobs.
pub const KILL_WINDOW_PERCENT: (usize, usize) = (5, 90);

/// The error a MeTTa job gets when the engine dies under it.
pub const ENGINE_DIED: &str = metta_learner_backend::learner_messages::ENGINE_DIED;
/// The error start-up recovery gives a job interrupted twice (src/store/mod.rs).
pub const INTERRUPTED_TWICE: &str = "interrupted by restart (twice)";
/// The log line of start-up recovery (src/app.rs).
pub const RECOVERY_LOG: &str = "recovered jobs interrupted by the previous stop";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the reliability suite: minutes of load with kills; run scripts/reliability.sh"]
async fn reliability_under_load_with_server_and_engine_kills() {
    let run_started = Instant::now();
    let seed = seed();
    let mut rng = Rng(seed);
    let plans = make_plans(&mut rng, seed);
    let total = CLIENTS * JOBS_PER_CLIENT;
    let events = chaos_schedule(&mut rng, total);
    print_schedule(seed, &events);

    // Arrange and act: the load, and the kills during it.
    let run = run_load_with_faults(plans, events, seed).await;

    // The end state: the queue, the sessions and their probes, the stored jobs.
    let end = end_state::read(run.server, &run.shared, &run.outcomes, &mut rng, seed).await;

    // Assert: the checks.
    let checks = checks::all(&run.outcomes, &run.log, &run.shared, &end);
    checks::report(
        &checks,
        &checks::Figures {
            seed,
            load_time: run.load_time,
            run_time: run_started.elapsed(),
            outcomes: &run.outcomes,
            log: &run.log,
            counters: &run.shared.counters,
            end: &end,
        },
    );
}

/// The workload's seed and the kill schedule, printed first so a run can be repeated.
fn print_schedule(seed: u64, events: &[ChaosEvent]) {
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
}

/// The load and its faults, once over.
struct Run {
    /// The last server life, still running.
    server: TestServer,
    shared: Arc<Shared>,
    outcomes: Vec<Outcome>,
    log: ChaosLog,
    load_time: Duration,
}

/// Starts the server, runs every client's plans against it while the chaos thread kills the
/// server and its engine on schedule, and returns when every client is done.
async fn run_load_with_faults(plans: Vec<Vec<Plan>>, events: Vec<ChaosEvent>, seed: u64) -> Run {
    let total = CLIENTS * JOBS_PER_CLIENT;
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
    let (server, log) = tokio::task::spawn_blocking(move || chaos.join())
        .await
        .expect("join")
        .unwrap_or_else(|_| panic!("the chaos thread panicked (a restart failed?)"));
    Run {
        server,
        shared,
        outcomes,
        log,
        load_time,
    }
}
