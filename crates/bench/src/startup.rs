//! Start-up to ready (spawn to the first `200` from `GET /health`) on a database of
//! `STARTUP_JOBS` finished jobs and on an empty one, `GET /health` once ready, jobs on the full
//! database, and the server's start-up probe of Python. The full database is filled by the
//! server's own store (`metta_learner_backend::fill_with_finished_jobs`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use metta_learner_backend::{fill_with_finished_jobs, probe_python};
use serde::Serialize;

use crate::api::Api;
use crate::server::Server;
use crate::setup::Setup;
use crate::stats::{median, ms, percentile, Summary, Timed};
use crate::workloads::{measure_metta_load, Load, Phases, Route};
use crate::{
    progress, FULL_DATABASE_JOBS, HEALTH_PROBES, SERVER_START_LIMIT, STARTUP_JOBS, STARTUP_RUNS,
    STARTUP_SESSIONS,
};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StartupReport {
    pub(crate) jobs: usize,
    /// Spawn to the first `200` from `GET /health`, each start, with the jobs / empty.
    pub(crate) ready_with_jobs_ms: Vec<f64>,
    pub(crate) ready_empty_ms: Vec<f64>,
    /// Spawn to the "listening on" log line, each start with the jobs / empty.
    pub(crate) listening_with_jobs_ms: Vec<f64>,
    pub(crate) listening_empty_ms: Vec<f64>,
    /// p50 of `GET /health` once ready (it counts jobs by status).
    pub(crate) health_with_jobs_p50_ms: f64,
    pub(crate) health_empty_p50_ms: f64,
    /// v1 `!(+ 2 3)` jobs at 1 client on the database with the jobs.
    pub(crate) v1_job_with_jobs: Summary,
    pub(crate) v1_job_with_jobs_phases: Phases,
    /// One `python -I -c 'import hyperon'` probe, p50 of 3.
    pub(crate) hyperon_probe_ms: f64,
    pub(crate) prepare_jobs_ms: f64,
}

pub(crate) struct StartTiming {
    pub(crate) ready: Duration,
    pub(crate) listening: Duration,
    pub(crate) health: Timed,
}

pub(crate) async fn measure_startup(setup: &Setup) -> Result<StartupReport> {
    progress(&format!("start-up: preparing {STARTUP_JOBS} finished jobs"));
    let full = setup.database("startup-full")?;
    let empty = setup.database("startup-empty")?;
    create_schema(setup, &empty).await?;
    create_schema(setup, &full).await?;
    let prepare = Instant::now();
    fill_with_finished_jobs(&full, STARTUP_JOBS, STARTUP_SESSIONS).await?;
    let prepare_jobs = prepare.elapsed();

    progress(&format!(
        "start-up: {STARTUP_RUNS} starts each, with jobs and empty"
    ));
    let mut with_jobs = Vec::new();
    let mut without = Vec::new();
    for _ in 0..STARTUP_RUNS {
        with_jobs.push(time_start_to_ready(setup, &full).await?);
        without.push(time_start_to_ready(setup, &empty).await?);
    }
    let on_full = measure_jobs_on(setup, &full, FULL_DATABASE_JOBS).await?;
    let mut probes = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        probe_python(&setup.python)
            .await
            .map_err(anyhow::Error::msg)?;
        probes.push(ms(started.elapsed()));
    }
    let health_p50 = |starts: &[StartTiming]| {
        let all: Vec<f64> = starts
            .iter()
            .flat_map(|start| start.health.samples.iter().map(|d| ms(*d)))
            .collect();
        percentile(&all, 0.5)
    };
    Ok(StartupReport {
        jobs: STARTUP_JOBS,
        ready_with_jobs_ms: with_jobs.iter().map(|start| ms(start.ready)).collect(),
        ready_empty_ms: without.iter().map(|start| ms(start.ready)).collect(),
        listening_with_jobs_ms: with_jobs.iter().map(|start| ms(start.listening)).collect(),
        listening_empty_ms: without.iter().map(|start| ms(start.listening)).collect(),
        health_with_jobs_p50_ms: health_p50(&with_jobs),
        health_empty_p50_ms: health_p50(&without),
        v1_job_with_jobs: Summary::of(&on_full.timed),
        v1_job_with_jobs_phases: Phases::of(&on_full),
        hyperon_probe_ms: median(&probes),
        prepare_jobs_ms: ms(prepare_jobs),
    })
}

/// `jobs` v1 MeTTa jobs at 1 client, on a server over `database`.
async fn measure_jobs_on(setup: &Setup, database: &Path, jobs: usize) -> Result<Load> {
    let server = Server::start(setup, database).await?;
    let load = measure_metta_load(&Api::new(&server), Route::V1, 1, jobs).await?;
    server.stop().await?;
    Ok(load)
}

/// Starts the server once on a new file (so its migrations run) and stops it.
async fn create_schema(setup: &Setup, database: &Path) -> Result<()> {
    Server::start(setup, database).await?.stop().await
}

async fn time_start_to_ready(setup: &Setup, database: &Path) -> Result<StartTiming> {
    let server = Server::start(setup, database).await?;
    let api = Api::new(&server);
    let ready_by = Instant::now() + SERVER_START_LIMIT;
    loop {
        match api.get("/health").await {
            Ok((200, _)) => break,
            _ if Instant::now() > ready_by => bail!("GET /health never answered 200"),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    let ready = server.spawned_at.elapsed();
    let health = time_health(&api).await?;
    let listening = server.listening_after;
    server.stop().await?;
    Ok(StartTiming {
        ready,
        listening,
        health,
    })
}

async fn time_health(api: &Api) -> Result<Timed> {
    let mut samples = Vec::new();
    let started = Instant::now();
    for _ in 0..HEALTH_PROBES {
        let one = Instant::now();
        let (status, body) = api.get("/health").await?;
        ensure!(status == 200, "GET /health answered {status}: {body}");
        samples.push(one.elapsed());
    }
    Ok(Timed {
        samples,
        wall: started.elapsed(),
    })
}
