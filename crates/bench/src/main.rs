//! `metta-learner-bench`: measures the service against the MeTTa engine's own speed, side by
//! side in one run on one machine, prints a markdown report and writes it to
//! `bench/results/latest.md` and `bench/results/latest.json`.
//!
//! What it measures (figures are this run's, on a possibly noisy machine; the ratios matter):
//! 1. the raw engine: `!(+ 2 3)` run N times in this process through pyo3 and hyperon, in one
//!    `MeTTa()` (built as the service's `driver.py` builds it): throughput and p50/p99 per run,
//!    the physical limit of the service;
//! 2. the service end to end over HTTP: the release binary `metta-learner-backend` on a fresh
//!    SQLite file (`PORT=0`, `RATE_LIMIT_PER_MINUTE=0`, `SCRATCH_DIR` in the benchmark's
//!    temporary folder so nothing is left behind, other settings default), for
//!    `POST /api/v1/jobs?wait=30` and for the legacy `POST /run-metta`, at 1 and 32 concurrent
//!    clients (the clients share a class of 64 sessions, a fresh `codeId` per job as the
//!    playground site sends, an untimed warm-up job in each session first);
//! 3. service throughput / raw throughput, and the p50 per job at 1 client against the raw p50
//!    (as a ratio, and as the overhead in ms);
//! 4. a bare `.venv/bin/python -I -c "print(1)"` spawn against a Python job end to end, back to
//!    back at 1 client (in two rounds of blocks, so drift of the machine hits both alike);
//! 5. start-up to ready (spawn to the first `200` from `GET /health`) with 100,000 finished jobs
//!    in the database, median of 3 starts, and the same on an empty database;
//! 6. rebuilding a 1,000-cell session (kill -9 of the engine child, then a job in that session)
//!    minus a normal job, against running the same cells in-process in one fresh `MeTTa()`.
//!
//! It also times the layers between the engine and the service, to show where the overhead
//! goes: the driver's step loop in-process, a round trip to a real `engine` child driven by the
//! server's own supervisor, the job's own timestamps (accepted → claimed → finished), Python
//! jobs with idle time between them, `GET /health` on the full database, and the
//! `import hyperon` probe the server runs at start-up.
//!
//! It drives the server through its HTTP API and the real binary; where a figure needs the
//! server's inside (the engine child's round trip, a database of 100,000 finished jobs, the
//! in-process engine, the start-up probe) it calls the server crate's public items made for
//! that (`metta_learner_backend::SupervisedEngine`, `fill_with_finished_jobs`,
//! `load_engine_driver`, `probe_python`), never a copy of them.
//!
//! | module | owns |
//! |---|---|
//! | `setup` | where the binaries and Python are, the temporary folder |
//! | `stats` | samples, summaries, percentiles |
//! | `in_process` | hyperon and the driver in this process |
//! | `engine_child` | round trips to a supervised engine child |
//! | `server` | starting, stopping and watching server processes |
//! | `api` | the HTTP client |
//! | `workloads` | MeTTa and Python jobs through the API, alone and under load |
//! | `service`, `startup`, `rebuild` | the service's measurements, `--quick` |
//! | `report` | the figures compared, the targets, markdown and JSON |
//! | `scaling` | `--scaling`: 1, 2 and 3 servers on one PostgreSQL, taking turns with the engine alone in as many processes (`--engine-loop`, a child of its own) |
//!
//! Run from the repository root after `scripts/setup.sh` (`scripts/bench.sh` does both). It
//! takes about a minute on a 2-core machine. The in-process measurements run before any
//! server starts; everything else runs on a single-threaded tokio runtime, so the load
//! generator takes as little CPU from the service as it can.

mod api;
mod engine_child;
mod in_process;
mod rebuild;
mod report;
mod scaling;
mod server;
mod service;
mod setup;
mod startup;
mod stats;
mod workloads;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::setup::Setup;
use crate::workloads::Route;

/// The program every MeTTa measurement runs, and what `metta-py` prints for it.
const PROGRAM: &str = "!(+ 2 3)";
const PROGRAM_RESULT: &str = "[5]\n";

const RAW_RUNS: usize = 5_000;
const ENGINE_CHILD_RUNS: usize = 2_000;
const ONE_CLIENT_JOBS: usize = 2_000;
const MANY_CLIENTS: usize = 32;
/// Enough that a block is mostly steady load: at its end the last clients run alone, which
/// counts against throughput.
const JOBS_PER_CLIENT_OF_MANY: usize = 200;
/// The class: sessions the load's clients share out (the default `MAX_LIVE_SESSIONS`, so all
/// stay live in the engine, as a class's would).
const CLASS_SESSIONS: usize = 64;
/// The p50 latency of one MeTTa job through the service, at 1 client, may be at most this
/// many times the raw engine's own p50 for the same program.
const P50_RATIO_TARGET: f64 = 3.0;
/// Every job adds rows to the database, and the service slows as its tables grow, so the two
/// APIs are measured in blocks in the order v1, legacy, legacy, v1: a steady drift hits both
/// alike.
const API_ORDER: [Route; 4] = [Route::V1, Route::Legacy, Route::Legacy, Route::V1];
/// Jobs at 1 client on the start-up database (100,000 jobs).
const FULL_DATABASE_JOBS: usize = 30;
const PYTHON_RUNS: usize = 60;
/// The idle time before each job of the paced Python run (a learner does not submit
/// back to back; the service uses idle time to start the next interpreter).
const PYTHON_PACE: Duration = Duration::from_millis(50);
const STARTUP_JOBS: usize = 100_000;
const STARTUP_SESSIONS: usize = 1_000;
const STARTUP_RUNS: usize = 3;
const HEALTH_PROBES: usize = 20;
const REPLAY_CELLS: usize = 1_000;
const REPLAY_RUNS: usize = 5;
const NORMAL_JOBS_PER_REPLAY_RUN: usize = 20;

const SERVER_START_LIMIT: Duration = Duration::from_secs(60);
const SERVER_STOP_LIMIT: Duration = Duration::from_secs(30);
const RESULTS_DIR: &str = "bench/results";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("metta-learner-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // Single-threaded, so the load generator takes as little CPU from the service as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let setup = runtime.block_on(Setup::discover())?;
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--engine-loop") {
        return scaling::engine_loop_child(&setup, args.get(at + 1).map(String::as_str));
    }
    if args.iter().any(|arg| arg == "--scaling") {
        return runtime.block_on(scaling::measure(&setup));
    }
    if args.iter().any(|arg| arg == "--quick") {
        return runtime.block_on(service::quick_check(&setup));
    }
    // Before any server starts, so nothing else competes for the CPU.
    let in_process = in_process::measure_in_process(&setup)?;
    progress(&format!(
        "engine child round trip ({ENGINE_CHILD_RUNS} runs)"
    ));
    let engine_child = runtime.block_on(engine_child::measure_engine_child(
        &setup,
        ENGINE_CHILD_RUNS,
    ))?;
    let service = runtime.block_on(service::measure_service(&setup))?;
    let report = report::Report::new(in_process, engine_child, service);
    let markdown = report::render_markdown(&report);
    print!("{markdown}");
    report::write_results(&markdown, &report)
}

fn progress(what: &str) {
    eprintln!("bench: {what}…");
}

/// The cells of the replay measurement: `(= (fK) K)` alternating with `!(fK)`.
fn replay_cells(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let k = i / 2;
            if i % 2 == 0 {
                format!("(= (f{k}) {k})")
            } else {
                format!("!(f{k})")
            }
        })
        .collect()
}
