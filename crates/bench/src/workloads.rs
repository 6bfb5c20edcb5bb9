//! What clients do to the service over HTTP: MeTTa jobs through the v1 or the legacy API,
//! alone or as a class of concurrent clients; Python jobs; the queue's counts. Each job's
//! answer is checked, and its own timestamps kept, so the report can split its latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::Api;
use crate::stats::{Summary, Timed};
use crate::{progress, API_ORDER, CLASS_SESSIONS, PROGRAM, PROGRAM_RESULT};

/// Which API a MeTTa job goes through.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    V1,
    Legacy,
}

impl Route {
    fn slug(self) -> &'static str {
        match self {
            Route::V1 => "v1",
            Route::Legacy => "legacy",
        }
    }
}

/// One job as a client saw it, with the job's own timestamps when the answer has them.
pub(crate) struct JobSample {
    pub(crate) latency: Duration,
    pub(crate) stamps: Option<JobStamps>,
}

/// From the job's `createdAt`, `startedAt` and `finishedAt` (millisecond resolution).
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobStamps {
    pub(crate) queued_ms: f64,
    pub(crate) running_ms: f64,
}

pub(crate) fn job_stamps(job: &Value) -> Option<JobStamps> {
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str()?)
            .ok()
            .map(|time| time.timestamp_micros() as f64 / 1000.0)
    };
    let (created, started, finished) = (at("createdAt")?, at("startedAt")?, at("finishedAt")?);
    Some(JobStamps {
        queued_ms: started - created,
        running_ms: finished - started,
    })
}

/// Runs `!(+ 2 3)` in `session` through `route` and checks the answer.
pub(crate) async fn run_metta_job(api: &Api, route: Route, session: &str) -> Result<JobSample> {
    let started = Instant::now();
    let (status, body) = match route {
        Route::V1 => {
            let code_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
            let job = json!({"language": "metta", "code": PROGRAM, "sessionId": session, "codeId": code_id});
            api.post("/api/v1/jobs?wait=30", &job, &[]).await?
        }
        Route::Legacy => {
            let code_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
            let job = json!({"code": PROGRAM, "language": "metta", "codeId": code_id});
            api.post("/run-metta", &job, &[("x-session-id", session)])
                .await?
        }
    };
    let latency = started.elapsed();
    ensure!(
        status == 200 && body["result"] == PROGRAM_RESULT,
        "{} MeTTa job in session {session} answered {status}: {body}",
        route.slug()
    );
    Ok(JobSample {
        latency,
        stamps: job_stamps(&body),
    })
}

/// A load run: the clients' samples and the wall time from the common start to the last answer.
pub(crate) struct Load {
    pub(crate) timed: Timed,
    pub(crate) stamps: Vec<JobStamps>,
}

impl Load {
    pub(crate) fn empty() -> Load {
        Load {
            timed: Timed::back_to_back(Vec::new()),
            stamps: Vec::new(),
        }
    }

    /// Adds a later block of the same measurement.
    fn append(&mut self, block: Load) {
        self.timed.samples.extend(block.timed.samples);
        self.timed.wall += block.timed.wall;
        self.stamps.extend(block.stamps);
    }

    /// Jobs one client ran one after another.
    pub(crate) fn back_to_back(jobs: Vec<JobSample>) -> Load {
        Load {
            stamps: jobs.iter().filter_map(|job| job.stamps).collect(),
            timed: Timed::back_to_back(jobs.iter().map(|job| job.latency).collect()),
        }
    }
}

/// Both APIs at `clients` clients, `jobs_per_client` jobs each, in the blocks of `API_ORDER`.
pub(crate) async fn measure_both_apis(
    api: &Api,
    clients: usize,
    jobs_per_client: usize,
) -> Result<(Load, Load)> {
    // Each API has two blocks in `API_ORDER`.
    let per_block = jobs_per_client / 2;
    let (mut v1, mut legacy) = (Load::empty(), Load::empty());
    for route in API_ORDER {
        let block = measure_metta_load(api, route, clients, per_block).await?;
        match route {
            Route::V1 => v1.append(block),
            Route::Legacy => legacy.append(block),
        }
    }
    Ok((v1, legacy))
}

/// `clients` concurrent clients over a class of `CLASS_SESSIONS` sessions: client `c` owns
/// sessions `c`, `c + clients`, … and sends its jobs to them in turn, each with a fresh
/// `codeId` (as the playground site does), `jobs_per_client` jobs one after another (after an
/// untimed warm-up job in each of its sessions, so no session is new when timing starts).
pub(crate) async fn measure_metta_load(
    api: &Api,
    route: Route,
    clients: usize,
    jobs_per_client: usize,
) -> Result<Load> {
    progress(&format!(
        "{} API, {clients} client(s) × {jobs_per_client} jobs over {CLASS_SESSIONS} sessions",
        route.slug()
    ));
    let start_line = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let api = api.clone();
        let start_line = start_line.clone();
        let sessions: Vec<String> = (client..CLASS_SESSIONS.max(clients))
            .step_by(clients)
            .map(|session| format!("bench-{}-learner-{session}", route.slug()))
            .collect();
        tasks.spawn(async move {
            let mut warm_up = Ok(());
            for session in &sessions {
                if let Err(err) = run_metta_job(&api, route, session).await {
                    warm_up = Err(err);
                    break;
                }
            }
            // Every client reaches the start line, even a failed one, so none waits forever.
            start_line.wait().await;
            warm_up?;
            let mut samples = Vec::with_capacity(jobs_per_client);
            for session in sessions.iter().cycle().take(jobs_per_client) {
                samples.push(run_metta_job(&api, route, session).await?);
            }
            anyhow::Ok(samples)
        });
    }
    start_line.wait().await;
    let started = Instant::now();
    let mut samples = Vec::new();
    while let Some(client) = tasks.join_next().await {
        samples.extend(client.context("a client task panicked")??);
    }
    let wall = started.elapsed();
    Ok(Load {
        stamps: samples.iter().filter_map(|sample| sample.stamps).collect(),
        timed: Timed {
            samples: samples.iter().map(|sample| sample.latency).collect(),
            wall,
        },
    })
}

/// Means of the job timestamps: queued (accepted → claimed by the worker) and running
/// (claimed → outcome written), and the rest of the client's latency outside both.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Phases {
    pub(crate) jobs: usize,
    pub(crate) created_to_started_ms: f64,
    pub(crate) started_to_finished_ms: f64,
    pub(crate) outside_ms: f64,
}

impl Phases {
    pub(crate) fn of(load: &Load) -> Phases {
        let n = load.stamps.len().max(1) as f64;
        let queued = load.stamps.iter().map(|s| s.queued_ms).sum::<f64>() / n;
        let running = load.stamps.iter().map(|s| s.running_ms).sum::<f64>() / n;
        let latency = Summary::of(&load.timed).mean_ms;
        Phases {
            jobs: load.stamps.len(),
            created_to_started_ms: queued,
            started_to_finished_ms: running,
            outside_ms: latency - queued - running,
        }
    }
}

/// All jobs the server has stored, from `GET /api/v1/queue`.
pub(crate) async fn jobs_in_database(api: &Api) -> Result<u64> {
    let (status, counts) = api.get("/api/v1/queue").await?;
    ensure!(
        status == 200,
        "GET /api/v1/queue answered {status}: {counts}"
    );
    Ok([
        "queued",
        "running",
        "succeeded",
        "failed",
        "timedOut",
        "cancelled",
    ]
    .iter()
    .filter_map(|state| counts[state].as_u64())
    .sum())
}

pub(crate) async fn run_python_job(api: &Api) -> Result<JobSample> {
    let started = Instant::now();
    let job = json!({"language": "python", "code": "print(1)"});
    let (status, body) = api.post("/api/v1/jobs?wait=30", &job, &[]).await?;
    let latency = started.elapsed();
    ensure!(
        status == 200 && body["status"] == "succeeded" && body["result"] == "1\n",
        "Python job answered {status}: {body}"
    );
    Ok(JobSample {
        latency,
        stamps: job_stamps(&body),
    })
}
