//! The service's measurements on one load server (both APIs at 1 and many clients, Python
//! jobs), then start-up and rebuild on servers of their own; and `--quick`, the v1 API with
//! each process's CPU time per job, for iterating on the service's overhead.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::api::Api;
use crate::engine_child::measure_engine_child;
use crate::rebuild::{measure_rebuild, RebuildFigures};
use crate::server::{cpu_seconds, engine_child_of, Server};
use crate::setup::Setup;
use crate::startup::{measure_startup, StartupReport};
use crate::stats::{Summary, Timed};
use crate::workloads::{
    jobs_in_database, measure_both_apis, measure_metta_load, run_python_job, Load, Phases, Route,
};
use crate::{
    progress, JOBS_PER_CLIENT_OF_MANY, MANY_CLIENTS, ONE_CLIENT_JOBS, PYTHON_PACE, PYTHON_RUNS,
};

/// What the service's measurements found.
pub(crate) struct ServiceFigures {
    pub(crate) v1_one: Load,
    pub(crate) v1_many: Load,
    pub(crate) legacy_one: Load,
    pub(crate) legacy_many: Load,
    /// Jobs in the load server's database after the MeTTa load (it keeps every job).
    pub(crate) load_database_jobs: u64,
    pub(crate) python: PythonFigures,
    pub(crate) startup: StartupReport,
    pub(crate) rebuild: RebuildFigures,
}

pub(crate) async fn measure_service(setup: &Setup) -> Result<ServiceFigures> {
    let server = Server::start(setup, &setup.database("load")?).await?;
    let api = Api::new(&server);
    let (v1_one, legacy_one) = measure_both_apis(&api, 1, ONE_CLIENT_JOBS).await?;
    let (v1_many, legacy_many) =
        measure_both_apis(&api, MANY_CLIENTS, JOBS_PER_CLIENT_OF_MANY).await?;
    let load_database_jobs = jobs_in_database(&api).await?;
    let python = measure_python(setup, &api, PYTHON_RUNS).await?;
    server.stop().await?;
    let startup = measure_startup(setup).await?;
    let rebuild = measure_rebuild(setup).await?;
    Ok(ServiceFigures {
        v1_one,
        v1_many,
        legacy_one,
        legacy_many,
        load_database_jobs,
        python,
        startup,
        rebuild,
    })
}

/// `--quick`: only the v1 API at 1 and at 32 clients, with the CPU time each process spent
/// per job (server, engine child, this load generator). For iterating on the service's
/// overhead; prints a few lines and writes no report.
pub(crate) async fn quick_check(setup: &Setup) -> Result<()> {
    // Another build's engine (BENCH_SERVER) may not speak this build's engine protocol: its
    // round trip is then not measured, and the service figures still are.
    match measure_engine_child(setup, 1_000).await {
        Ok(engine) => println!(
            "engine child round trip: p50 {:.3} ms",
            Summary::of(&engine.round_trip).p50_ms
        ),
        Err(err) => println!("engine child round trip: not measured ({err:#})"),
    }
    let server = Server::start(setup, &setup.database("quick")?).await?;
    let api = Api::new(&server);
    let server_pid = server.pid()?;
    for (clients, jobs_per_client) in [(1, 1_000), (MANY_CLIENTS, 150)] {
        // Warm-up (sessions exist and are live in the engine), then the timed load.
        measure_metta_load(&api, Route::V1, clients, 2).await?;
        let engine = engine_child_of(server_pid).unwrap_or(0);
        let before = [
            cpu_seconds(server_pid),
            cpu_seconds(engine),
            cpu_seconds(std::process::id()),
        ];
        let load = measure_metta_load(&api, Route::V1, clients, jobs_per_client).await?;
        let after = [
            cpu_seconds(server_pid),
            cpu_seconds(engine),
            cpu_seconds(std::process::id()),
        ];
        let summary = Summary::of(&load.timed);
        let phases = Phases::of(&load);
        let per_job = |i: usize| (after[i] - before[i]) * 1000.0 / summary.n.max(1) as f64;
        println!(
            "v1 {clients:>2} client(s): {:.0} jobs/s, p50 {:.3} ms, p99 {:.3} ms; phases {:.2} · {:.2} · {:.2} ms; CPU ms/job: server {:.3}, engine {:.3}, load generator {:.3}",
            summary.throughput_per_s,
            summary.p50_ms,
            summary.p99_ms,
            phases.created_to_started_ms,
            phases.started_to_finished_ms,
            phases.outside_ms,
            per_job(0),
            per_job(1),
            per_job(2),
        );
    }
    server.stop().await
}

pub(crate) struct PythonFigures {
    pub(crate) bare_spawn: Timed,
    /// Jobs back to back, as one client sending one after another.
    pub(crate) job: Load,
    /// Jobs with `PYTHON_PACE` of idle time before each.
    pub(crate) paced_job: Load,
}

/// Bare spawns and Python jobs back to back, in two rounds of one block each (blocks, so the
/// spawns never compete with the service's own interpreter start-up; two rounds, so drift of
/// the machine hits both alike), then paced jobs.
async fn measure_python(setup: &Setup, api: &Api, runs: usize) -> Result<PythonFigures> {
    progress(&format!(
        "Python: {runs} spawns, {runs} jobs, {runs} paced jobs"
    ));
    for _ in 0..2 {
        time_bare_python_spawn(&setup.python)?;
        run_python_job(api).await?;
    }
    let mut bare = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..2 {
        for _ in 0..runs / 2 {
            bare.push(time_bare_python_spawn(&setup.python)?);
        }
        for _ in 0..runs / 2 {
            jobs.push(run_python_job(api).await?);
        }
    }
    let mut paced = Vec::new();
    for _ in 0..runs {
        tokio::time::sleep(PYTHON_PACE).await;
        paced.push(run_python_job(api).await?);
    }
    Ok(PythonFigures {
        bare_spawn: Timed::back_to_back(bare),
        job: Load::back_to_back(jobs),
        paced_job: Load::back_to_back(paced),
    })
}

fn time_bare_python_spawn(python: &Path) -> Result<Duration> {
    let started = Instant::now();
    let output = Command::new(python)
        .args(["-I", "-c", "print(1)"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let took = started.elapsed();
    ensure!(
        output.status.success() && output.stdout == b"1\n",
        "python -I -c 'print(1)' failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(took)
}
