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
//!    clients (the clients share a class of 64 sessions, a fresh `codeId` per job as the playground
//!    site sends, an untimed warm-up job in each session first);
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
//! goes: the driver's step loop in-process, a round trip to a real `engine` child over its pipe
//! protocol, the job's own timestamps (accepted → claimed → finished), Python jobs with idle
//! time between them, `GET /health` on the full database, and the `import hyperon` probe the
//! server runs at start-up.
//!
//! Run from the repository root after `scripts/setup.sh` (`scripts/bench.sh` does both). It
//! takes about a minute on a 2-core machine. The in-process measurements run before any
//! server starts; everything else runs on a single-threaded tokio runtime, so the load
//! generator takes as little CPU from the service as it can.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{SecondsFormat, TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metta_learner_backend::engine::child::{use_sys_path, REQUEST_FD, RESPONSE_FD};
use metta_learner_backend::sandbox::{cloexec_pipe, pass_fd_as};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};
use serde::Serialize;
use serde_json::{json, Value};

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

/// The service's MeTTa driver, loaded in-process for the step-loop and replay timings.
const DRIVER_SOURCE: &str = include_str!("../engine/driver.py");

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
    let setup = Setup::discover()?;
    if std::env::args().any(|arg| arg == "--scaling") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(scaling::measure(&setup));
    }
    if std::env::args().any(|arg| arg == "--quick") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(quick_check(&setup));
    }
    let in_process = measure_in_process(&setup)?;
    progress(&format!(
        "engine child round trip ({ENGINE_CHILD_RUNS} runs)"
    ));
    let engine_child = measure_engine_child(&setup, ENGINE_CHILD_RUNS)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let service = runtime.block_on(measure_service(&setup))?;
    let report = Report::new(in_process, engine_child, service);
    let markdown = render_markdown(&report);
    print!("{markdown}");
    write_results(&markdown, &report)
}

/// `--scaling`: the same service on one PostgreSQL with 1, 2 and 3 server processes, under
/// a workload of realistic jobs (a MeTTa program of about 20 ms of engine time, in many
/// sessions); writes `bench/results/scaling.md`.
mod scaling {
    use super::*;

    /// Sessions (one client each), jobs per client in the timed window, and the program.
    const CLIENTS: usize = 48;
    const JOBS_PER_CLIENT: usize = 15;
    const DEFINITION: &str = "(= (fib $n) (if (< $n 2) $n (+ (fib (- $n 1)) (fib (- $n 2)))))";
    const PROGRAM: &str = "!(fib 3)";

    fn psql(url: &str, sql: &str) -> Result<()> {
        let status = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
            .status()
            .context("cannot run psql")?;
        ensure!(status.success(), "psql {sql} failed");
        Ok(())
    }

    pub(super) async fn measure(setup: &Setup) -> Result<()> {
        let admin = std::env::var("BENCH_PG_ADMIN_URL").context(
            "--scaling needs BENCH_PG_ADMIN_URL (scripts/bench.sh --scaling starts the project's PostgreSQL)",
        )?;
        let (base, _) = admin
            .rsplit_once('/')
            .ok_or_else(|| anyhow!("BENCH_PG_ADMIN_URL ends in /DATABASE"))?;
        let mut rows = Vec::new();
        for processes in 1..=3usize {
            let name = format!("bench_scaling_{processes}_{}", std::process::id());
            psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )?;
            psql(&admin, &format!("CREATE DATABASE {name}"))?;
            let url = format!("{base}/{name}");
            let result = run_with(setup, &url, processes).await;
            psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )?;
            rows.push((processes, result?));
        }
        let one = rows[0].1 .0;
        let mut markdown = format!(
            "## Scaling on one PostgreSQL\n\n{CLIENTS} clients, each with its own session, \
             {JOBS_PER_CLIENT} jobs each (`{PROGRAM}` after `fib` is defined: about 20 ms of \
             engine time), requests spread round-robin over the processes, `?wait=30`.\n\n\
             | processes | jobs/s | × one process | p50 ms | p99 ms |\n|---|---|---|---|---|\n"
        );
        for (processes, (throughput, p50, p99)) in &rows {
            markdown.push_str(&format!(
                "| {processes} | {throughput:.1} | {:.2} | {p50:.1} | {p99:.1} |\n",
                throughput / one
            ));
        }
        print!("{markdown}");
        std::fs::create_dir_all("bench/results").context("cannot create bench/results")?;
        std::fs::write("bench/results/scaling.md", &markdown)
            .context("cannot write bench/results/scaling.md")?;
        Ok(())
    }

    /// Throughput (jobs/s) and p50/p99 latency (ms) with `processes` servers on `url`.
    async fn run_with(setup: &Setup, url: &str, processes: usize) -> Result<(f64, f64, f64)> {
        progress(&format!(
            "scaling: {processes} process(es) on one PostgreSQL"
        ));
        let mut servers = Vec::new();
        for i in 0..processes {
            let folder = setup.work.path().join(format!("scaling-{processes}-{i}"));
            std::fs::create_dir_all(&folder).context("cannot create a folder")?;
            let host = format!("bench-{i}");
            servers.push(
                Server::start_on(
                    setup,
                    url,
                    &folder,
                    &[("HOST_ID", &host), ("MAX_LIVE_SESSIONS", "128")],
                )
                .await?,
            );
        }
        let apis: Vec<Api> = servers.iter().map(Api::new).collect();
        // Warm-up, untimed: each session gets its definition (and the engines their start).
        let mut warm = Vec::new();
        for client in 0..CLIENTS {
            let api = apis[client % apis.len()].clone();
            warm.push(tokio::spawn(async move {
                let body = json!({"language": "metta", "sessionId": format!("scale-{client}"), "code": DEFINITION});
                api.post("/api/v1/jobs?wait=30", &body, &[]).await
            }));
        }
        for task in warm {
            let (status, job) = task.await.context("warm-up task")??;
            ensure!(
                status == 200 && job["status"] == "succeeded",
                "warm-up: {status} {job}"
            );
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let apis = apis.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(JOBS_PER_CLIENT);
                for job in 0..JOBS_PER_CLIENT {
                    let api = &apis[(client + job) % apis.len()];
                    let body = json!({"language": "metta", "sessionId": format!("scale-{client}"), "code": PROGRAM});
                    let sent = Instant::now();
                    let (status, answer) = api.post("/api/v1/jobs?wait=30", &body, &[]).await?;
                    ensure!(
                        status == 200 && answer["result"] == "[2]\n",
                        "a job answered {status}: {answer}"
                    );
                    latencies.push(sent.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.context("client task")??);
        }
        let wall = started.elapsed();
        for server in servers {
            server.stop().await?;
        }
        latencies.sort();
        let at = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[index].as_secs_f64() * 1000.0
        };
        let throughput = latencies.len() as f64 / wall.as_secs_f64();
        Ok((throughput, at(0.5), at(0.99)))
    }
}

fn progress(what: &str) {
    eprintln!("bench: {what}…");
}

// ----- set-up ---------------------------------------------------------------------------

/// Where things are, and the project Python's `sys.path`.
struct Setup {
    server_binary: PathBuf,
    python: PathBuf,
    sys_path: Vec<String>,
    /// Everything the benchmark creates (databases, working folders); removed at the end.
    work: tempfile::TempDir,
}

impl Setup {
    fn discover() -> Result<Setup> {
        let own = std::env::current_exe().context("cannot find this benchmark's executable")?;
        // BENCH_SERVER measures another build of the server (e.g. an earlier commit's) with
        // this benchmark's workload, for a side-by-side comparison.
        let server_binary = std::env::var_os("BENCH_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| own.with_file_name("metta-learner-backend"));
        ensure!(
            server_binary.exists(),
            "{} is missing: build it first (scripts/bench.sh does)",
            server_binary.display()
        );
        let python =
            std::path::absolute(".venv/bin/python").context("cannot resolve .venv/bin/python")?;
        ensure!(
            python.exists(),
            "{} is missing: run from the repository root after scripts/setup.sh",
            python.display()
        );
        let (sys_path, _) = probe_python(&python)?;
        let work = tempfile::Builder::new()
            .prefix("mlb-bench-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        // The servers' children, which may run under an unprivileged uid, pass through it to
        // their scratch folders.
        set_mode(work.path(), 0o711)?;
        Ok(Setup {
            server_binary,
            python,
            sys_path,
            work,
        })
    }

    /// A path for a new SQLite file in its own folder (the server restricts its folder).
    fn database(&self, name: &str) -> Result<PathBuf> {
        let folder = self.work.path().join(name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        Ok(folder.join("bench.db"))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Runs the server's own start-up probe (`import hyperon`, print `sys.path`) and returns the
/// absolute `sys.path` entries and how long the probe took.
fn probe_python(python: &Path) -> Result<(Vec<String>, Duration)> {
    const SCRIPT: &str = "import json, sys\nimport hyperon\nprint(json.dumps(sys.path))";
    let started = Instant::now();
    let output = Command::new(python)
        .args(["-I", "-c", SCRIPT])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let took = started.elapsed();
    ensure!(
        output.status.success(),
        "{} cannot import hyperon (run scripts/setup.sh): {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let paths: Vec<String> = serde_json::from_slice(&output.stdout)
        .context("the Python probe printed no sys.path list")?;
    let absolute = paths
        .into_iter()
        .filter(|path| Path::new(path).is_absolute())
        .collect();
    Ok((absolute, took))
}

// ----- statistics -----------------------------------------------------------------------

/// Latency samples of N operations and the wall time they took together.
struct Timed {
    samples: Vec<Duration>,
    wall: Duration,
}

/// Times `runs` calls of `operation`, one after another.
fn time_each(runs: usize, mut operation: impl FnMut() -> Result<()>) -> Result<Timed> {
    let mut samples = Vec::with_capacity(runs);
    let started = Instant::now();
    for _ in 0..runs {
        let one = Instant::now();
        operation()?;
        samples.push(one.elapsed());
    }
    Ok(Timed {
        samples,
        wall: started.elapsed(),
    })
}

impl Timed {
    /// Samples of operations run one after another, with nothing between them.
    fn back_to_back(samples: Vec<Duration>) -> Timed {
        let wall = samples.iter().sum();
        Timed { samples, wall }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    n: usize,
    throughput_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

impl Summary {
    fn of(timed: &Timed) -> Summary {
        let samples: Vec<f64> = timed.samples.iter().map(|d| ms(*d)).collect();
        let n = samples.len();
        Summary {
            n,
            throughput_per_s: n as f64 / timed.wall.as_secs_f64().max(f64::MIN_POSITIVE),
            p50_ms: percentile(&samples, 0.50),
            p99_ms: percentile(&samples, 0.99),
            mean_ms: samples.iter().sum::<f64>() / n.max(1) as f64,
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile (`p` in 0..=1); 0 for no samples.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

// ----- in-process engine (pyo3 + hyperon) ---------------------------------------------------

struct InProcess {
    hyperon: String,
    raw: Timed,
    driver_step_loop: Timed,
    /// One fresh `MeTTa()` plus `metta.run` of each replay cell, per repetition.
    direct_cells: Vec<Duration>,
    /// The driver's own `_replay` of the same cells into a fresh `MeTTa()`, per repetition.
    driver_replay: Vec<Duration>,
}

fn measure_in_process(setup: &Setup) -> Result<InProcess> {
    Python::attach(|py| {
        let driver = load_driver(py, setup)?;
        let hyperon = driver
            .call_method1(
                "configure",
                (64, setup.work.path().display().to_string(), 4096),
            )?
            .extract::<String>()?;
        progress(&format!("raw engine in-process ({RAW_RUNS} runs)"));
        let raw = time_raw_engine(&driver, RAW_RUNS)?;
        progress(&format!("driver step loop in-process ({RAW_RUNS} runs)"));
        let driver_step_loop = time_driver_step_loop(&driver, RAW_RUNS)?;
        progress(&format!("{REPLAY_CELLS} cells in-process"));
        let cells = replay_cells(REPLAY_CELLS);
        let mut direct_cells = Vec::new();
        let mut driver_replay = Vec::new();
        for _ in 0..REPLAY_RUNS {
            direct_cells.push(time_direct_cells(&driver, &cells)?);
            driver_replay.push(time_driver_replay(&driver, &cells)?);
        }
        Ok(InProcess {
            hyperon,
            raw,
            driver_step_loop,
            direct_cells,
            driver_replay,
        })
    })
}

/// Puts the project environment on `sys.path` the way the engine child does and loads the
/// service's `driver.py` (which imports hyperon).
fn load_driver<'py>(py: Python<'py>, setup: &Setup) -> Result<Bound<'py, PyModule>> {
    use_sys_path(py, &setup.sys_path)?;
    let source = CString::new(DRIVER_SOURCE).context("driver.py contains a NUL byte")?;
    PyModule::from_code(py, source.as_c_str(), c"driver.py", c"mlb_bench_driver")
        .context("cannot load driver.py (is hyperon installed in .venv?)")
}

/// A fresh `MeTTa()`, built as the service builds one (hyperon's `metta-py` environment, no
/// config folder, so nothing is written to the home folder).
fn fresh_metta<'py>(driver: &Bound<'py, PyModule>) -> Result<Bound<'py, PyAny>> {
    Ok(driver.call_method0("_fresh_metta")?)
}

/// `metta.run("!(+ 2 3)")` in one `MeTTa()`, after a short warm-up.
fn time_raw_engine(driver: &Bound<'_, PyModule>, runs: usize) -> Result<Timed> {
    let metta = fresh_metta(driver)?;
    let first = metta.call_method1("run", (PROGRAM,))?.str()?.to_string();
    ensure!(
        first == "[[5]]",
        "hyperon ran {PROGRAM} to {first}, not [[5]]"
    );
    let run_once = || -> Result<()> {
        metta.call_method1("run", (PROGRAM,))?;
        Ok(())
    };
    time_each(runs / 10, run_once)?;
    time_each(runs, run_once)
}

/// The driver's `_run_stepwise` (the engine's step loop with its deadline and memory checks)
/// on the same program, in one `MeTTa()`.
fn time_driver_step_loop(driver: &Bound<'_, PyModule>, runs: usize) -> Result<Timed> {
    let metta = fresh_metta(driver)?;
    let run_once = || -> Result<()> {
        let (_, error, stop): (Bound<'_, PyAny>, Option<String>, Option<String>) = driver
            .call_method1("_run_stepwise", (&metta, PROGRAM, f64::INFINITY))?
            .extract()?;
        ensure!(
            error.is_none() && stop.is_none(),
            "the driver's step loop failed: {error:?} {stop:?}"
        );
        Ok(())
    };
    time_each(runs / 10, run_once)?;
    time_each(runs, run_once)
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

/// One fresh `MeTTa()` and `metta.run` of each cell in turn.
fn time_direct_cells(driver: &Bound<'_, PyModule>, cells: &[String]) -> Result<Duration> {
    let started = Instant::now();
    let metta = fresh_metta(driver)?;
    for cell in cells {
        metta.call_method1("run", (cell.as_str(),))?;
    }
    Ok(started.elapsed())
}

/// One fresh `MeTTa()` and the driver's `_replay` of the cells (what the engine does on a
/// rebuild, without the process boundary).
fn time_driver_replay(driver: &Bound<'_, PyModule>, cells: &[String]) -> Result<Duration> {
    let py = driver.py();
    let cells = PyList::new(py, cells)?;
    let started = Instant::now();
    let metta = fresh_metta(driver)?;
    let error: Option<String> = driver
        .call_method1("_replay", (&metta, cells, f64::INFINITY))?
        .extract()?;
    let took = started.elapsed();
    if let Some(error) = error {
        bail!("the driver could not replay the cells: {error}");
    }
    Ok(took)
}

// ----- a real engine child over its pipe protocol -----------------------------------------

/// The `engine` subcommand of the server binary, started directly (without the service's
/// containment) and driven over its protocol: JSON requests on `REQUEST_FD`, answers on
/// `RESPONSE_FD`.
struct EngineChild {
    child: Child,
    requests: Option<File>,
    answers: BufReader<File>,
}

impl EngineChild {
    fn spawn(setup: &Setup) -> Result<EngineChild> {
        let work_dir = setup.work.path();
        let (reader, writer) = cloexec_pipe().context("cannot create a pipe")?;
        let (request_reader, request_writer) = cloexec_pipe().context("cannot create a pipe")?;
        let mut command = tokio::process::Command::new(&setup.server_binary);
        command
            .arg("engine")
            .arg("--sys-path")
            .arg(serde_json::to_string(&setup.sys_path)?)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", work_dir)
            .current_dir(work_dir)
            // The requests on stdin too: builds before the request fd read them there (for a
            // side-by-side run with BENCH_SERVER).
            .stdin(Stdio::from(
                request_reader
                    .try_clone()
                    .context("cannot share the request pipe")?,
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        pass_fd_as(&mut command, &writer, RESPONSE_FD);
        pass_fd_as(&mut command, &request_reader, REQUEST_FD);
        // Spawned as a plain std process: the round trips below are timed synchronously.
        let child = command
            .as_std_mut()
            .spawn()
            .context("cannot start the engine child")?;
        drop(writer);
        drop(request_reader);
        let requests = Some(File::from(request_writer));
        let mut engine = EngineChild {
            child,
            requests,
            answers: BufReader::new(File::from(reader)),
        };
        let greeting = engine.read_answer()?;
        ensure!(
            greeting["outcome"] == "ready",
            "the engine child did not start: {greeting}"
        );
        Ok(engine)
    }

    fn read_answer(&mut self) -> Result<Value> {
        let mut line = String::new();
        let read = self
            .answers
            .read_line(&mut line)
            .context("cannot read the engine's answer")?;
        ensure!(read > 0, "the engine child closed its answer channel");
        serde_json::from_str(&line).with_context(|| format!("unreadable engine answer {line:?}"))
    }

    /// Sends one run request and waits for its final answer (skipping progress lines).
    fn run(&mut self, request: &Value) -> Result<Value> {
        let requests = self
            .requests
            .as_mut()
            .ok_or_else(|| anyhow!("the engine child's request pipe is closed"))?;
        writeln!(requests, "{request}").context("cannot send the engine a request")?;
        requests
            .flush()
            .context("cannot send the engine a request")?;
        loop {
            let answer = self.read_answer()?;
            if answer["outcome"] != "progress" {
                return Ok(answer);
            }
        }
    }
}

impl Drop for EngineChild {
    fn drop(&mut self) {
        // The engine exits at the end of its requests.
        drop(self.requests.take());
        let _ = self.child.wait();
    }
}

/// A batch of one run, as the supervisor sends it; `history` present builds the session
/// afresh.
fn engine_request(id: usize, session: &str, generation: i64, history: Option<&[String]>) -> Value {
    json!({"op": "batch", "id": format!("batch-{id}"), "runs": [{
        "id": format!("bench-{id}"),
        "session": session,
        "generation": generation,
        "history": history,
        "code": PROGRAM,
        "after": [],
        "timeoutMs": 30_000,
        "replayTimeoutMs": 120_000,
        "successGeneration": 1,
        "markerStart": "\u{1}bench:start\u{1}",
        "markerEnd": "\u{1}bench:end\u{1}",
    }]})
}

struct EngineChildFigures {
    /// `!(+ 2 3)` in a live session.
    round_trip: Timed,
    /// A new session built from the replay cells, then `!(+ 2 3)`, per repetition.
    replay: Vec<Duration>,
}

/// Round trips of `!(+ 2 3)` to a live session of a real engine child, then sessions built
/// from the history of the replay measurement (as after an engine restart).
fn measure_engine_child(setup: &Setup, runs: usize) -> Result<EngineChildFigures> {
    let mut engine = EngineChild::spawn(setup)?;
    let mut next_id = 0;
    let mut run = |session: &str, generation: i64, history: Option<&[String]>| -> Result<()> {
        next_id += 1;
        let answer = engine.run(&engine_request(next_id, session, generation, history))?;
        ensure!(
            answer["outcome"] == "succeeded" && answer["lines"][0] == "[5]",
            "the engine child answered {answer}"
        );
        Ok(())
    };
    let no_history: &[String] = &[];
    run("bench", 0, Some(no_history))?;
    time_each(runs / 10, || run("bench", 1, None))?;
    let round_trip = time_each(runs, || run("bench", 1, None))?;
    let cells = replay_cells(REPLAY_CELLS);
    let mut replay = Vec::new();
    for repetition in 0..REPLAY_RUNS {
        let session = format!("replay-{repetition}");
        replay.push(time_each(1, || run(&session, 0, Some(&cells)))?.wall);
    }
    Ok(EngineChildFigures { round_trip, replay })
}

// ----- the service ------------------------------------------------------------------------

/// A running server: the release binary on its own database, its address from its log.
struct Server {
    child: Option<Child>,
    address: String,
    spawned_at: Instant,
    /// Until the address appeared.
    listening_after: Duration,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts the server on `database`, its children's scratch folder next to the database's
    /// folder (inside the benchmark's temporary folder, so it goes with it).
    async fn start(setup: &Setup, database: &Path) -> Result<Server> {
        let folder = database.parent().unwrap_or(setup.work.path());
        Self::start_on(
            setup,
            &format!("sqlite://{}", database.display()),
            folder,
            &[],
        )
        .await
    }

    /// Starts the server on the database `url`, in `folder` (its scratch folder next to it),
    /// with extra environment variables.
    async fn start_on(
        setup: &Setup,
        url: &str,
        folder: &Path,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let scratch = format!("{}-scratch", folder.display());
        let mut command = Command::new(&setup.server_binary);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", url)
            .env("PYTHON", &setup.python)
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("SCRATCH_DIR", scratch)
            .env("RUST_LOG", "info")
            .current_dir(folder)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", setup.server_binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("the server has no stderr"))?;
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (address_sender, address) = tokio::sync::oneshot::channel();
        let log_lines = logs.clone();
        std::thread::spawn(move || follow_log(stderr, address_sender, log_lines));
        let mut server = Server {
            child: Some(child),
            address: String::new(),
            spawned_at,
            listening_after: Duration::ZERO,
            logs,
        };
        match tokio::time::timeout(SERVER_START_LIMIT, address).await {
            Ok(Ok(address)) => server.address = address,
            _ => bail!(
                "the server did not start listening; its log:\n{}",
                server.log_tail()
            ),
        }
        server.listening_after = spawned_at.elapsed();
        Ok(server)
    }

    fn log_tail(&self) -> String {
        self.logs
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow!("the server is not running"))
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), libc::SIGTERM)?;
        let deadline = Instant::now() + SERVER_STOP_LIMIT;
        loop {
            if let Some(status) = child.try_wait().context("cannot wait for the server")? {
                ensure!(status.success(), "the server stopped with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not stop within {SERVER_STOP_LIMIT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the server's log: sends the address of its "listening on http://…" line and keeps
/// the last lines for error messages.
fn follow_log(
    stderr: std::process::ChildStderr,
    address: tokio::sync::oneshot::Sender<String>,
    logs: Arc<Mutex<VecDeque<String>>>,
) {
    let mut address = Some(address);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(at) = line.find("listening on http://") {
            if let Some(sender) = address.take() {
                let _ = sender.send(line[at + "listening on ".len()..].trim().to_string());
            }
        }
        if let Ok(mut logs) = logs.lock() {
            if logs.len() == 40 {
                logs.pop_front();
            }
            logs.push_back(line);
        }
    }
}

fn signal(pid: u32, signal: i32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("process id out of range")?;
    // SAFETY: sending a signal to a process we started; no memory effects.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot signal process {pid}"));
    }
    Ok(())
}

/// HTTP/1.1 client on hyper-util's pooled client (keep-alive connections).
#[derive(Clone)]
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: server.address.clone(),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(body)?))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("cannot build a request")?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("{path}: the request failed"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{path}: cannot read the answer"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{path} answered {status} with non-JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok((status, value))
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        self.request(Method::POST, path, headers, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.request(Method::GET, path, &[], None).await
    }
}

/// Which API a MeTTa job goes through.
#[derive(Debug, Clone, Copy)]
enum Route {
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
struct JobSample {
    latency: Duration,
    stamps: Option<JobStamps>,
}

/// From the job's `createdAt`, `startedAt` and `finishedAt` (millisecond resolution).
#[derive(Debug, Clone, Copy)]
struct JobStamps {
    queued_ms: f64,
    running_ms: f64,
}

fn job_stamps(job: &Value) -> Option<JobStamps> {
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
async fn run_metta_job(api: &Api, route: Route, session: &str) -> Result<JobSample> {
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
struct Load {
    timed: Timed,
    stamps: Vec<JobStamps>,
}

impl Load {
    fn empty() -> Load {
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
    fn back_to_back(jobs: Vec<JobSample>) -> Load {
        Load {
            stamps: jobs.iter().filter_map(|job| job.stamps).collect(),
            timed: Timed::back_to_back(jobs.iter().map(|job| job.latency).collect()),
        }
    }
}

/// Both APIs at `clients` clients, `jobs_per_client` jobs each, in the blocks of `API_ORDER`.
async fn measure_both_apis(
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
async fn measure_metta_load(
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
struct Phases {
    jobs: usize,
    created_to_started_ms: f64,
    started_to_finished_ms: f64,
    outside_ms: f64,
}

impl Phases {
    fn of(load: &Load) -> Phases {
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

struct ServiceFigures {
    v1_one: Load,
    v1_many: Load,
    legacy_one: Load,
    legacy_many: Load,
    /// Jobs in the load server's database after the MeTTa load (it keeps every job).
    load_database_jobs: u64,
    python: PythonFigures,
    startup: StartupReport,
    rebuild: RebuildFigures,
}

async fn measure_service(setup: &Setup) -> Result<ServiceFigures> {
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
async fn quick_check(setup: &Setup) -> Result<()> {
    let engine = measure_engine_child(setup, 1_000)?;
    println!(
        "engine child round trip: p50 {:.3} ms",
        Summary::of(&engine.round_trip).p50_ms
    );
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

/// User + system CPU seconds a process has used so far (0 when it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no memory effects.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// All jobs the server has stored, from `GET /api/v1/queue`.
async fn jobs_in_database(api: &Api) -> Result<u64> {
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

// ----- Python -----------------------------------------------------------------------------

struct PythonFigures {
    bare_spawn: Timed,
    /// Jobs back to back, as one client sending one after another.
    job: Load,
    /// Jobs with `PYTHON_PACE` of idle time before each.
    paced_job: Load,
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

async fn run_python_job(api: &Api) -> Result<JobSample> {
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

// ----- start-up -----------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct StartupReport {
    jobs: usize,
    /// Spawn to the first `200` from `GET /health`, each start, with the jobs / empty.
    ready_with_jobs_ms: Vec<f64>,
    ready_empty_ms: Vec<f64>,
    /// Spawn to the "listening on" log line, each start with the jobs / empty.
    listening_with_jobs_ms: Vec<f64>,
    listening_empty_ms: Vec<f64>,
    /// p50 of `GET /health` once ready (it counts jobs by status).
    health_with_jobs_p50_ms: f64,
    health_empty_p50_ms: f64,
    /// v1 `!(+ 2 3)` jobs at 1 client on the database with the jobs.
    v1_job_with_jobs: Summary,
    v1_job_with_jobs_phases: Phases,
    /// One `python -I -c 'import hyperon'` probe, p50 of 3.
    hyperon_probe_ms: f64,
    prepare_jobs_ms: f64,
}

struct StartTiming {
    ready: Duration,
    listening: Duration,
    health: Timed,
}

async fn measure_startup(setup: &Setup) -> Result<StartupReport> {
    progress(&format!("start-up: preparing {STARTUP_JOBS} finished jobs"));
    let full = setup.database("startup-full")?;
    let empty = setup.database("startup-empty")?;
    create_schema(setup, &empty).await?;
    create_schema(setup, &full).await?;
    let prepare = Instant::now();
    insert_finished_jobs(&full, STARTUP_JOBS, STARTUP_SESSIONS).await?;
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
        probes.push(ms(probe_python(&setup.python)?.1));
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

/// Bulk-inserts finished MeTTa runs, as the service would have stored them, in one
/// transaction: uuid v7 ids, one a second, spread over `sessions` sessions (with their
/// `sessions` rows; history cells are left out: start-up never reads them).
async fn insert_finished_jobs(database: &Path, jobs: usize, sessions: usize) -> Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(database)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .connect()
        .await
        .with_context(|| format!("cannot open {}", database.display()))?;
    let mut tx = connection.begin().await?;
    let first = Utc::now() - TimeDelta::seconds(jobs as i64);
    for i in 0..jobs {
        let created = first + TimeDelta::seconds(i as i64);
        let started = created + TimeDelta::milliseconds(2);
        let finished = started + TimeDelta::milliseconds(3);
        let (id, session, code) = (
            uuid::Uuid::now_v7().to_string(),
            format!("learner-{}", i % sessions),
            format!("!(+ {i} 1)"),
        );
        let (result, results) = (format!("[{}]\n", i + 1), format!("[[\"{}\"]]", i + 1));
        let (created, started, finished) =
            (timestamp(created), timestamp(started), timestamp(finished));
        sqlx::query!(
            "INSERT INTO jobs (id, kind, language, session_id, code, timeout_ms, status, \
                               attempts, result, results_json, stdout, stderr, \
                               output_truncated, created_at, started_at, finished_at, \
                               duration_ms) \
             VALUES (?, 'run', 'metta', ?, ?, 30000, 'succeeded', 1, ?, ?, '', '', 0, ?, ?, ?, 3)",
            id,
            session,
            code,
            result,
            results,
            created,
            started,
            finished,
        )
        .execute(&mut *tx)
        .await
        .context("cannot insert jobs")?;
    }
    for session in 0..sessions {
        let (id, generation, created, updated) = (
            format!("learner-{session}"),
            (jobs / sessions) as i64,
            timestamp(first),
            timestamp(Utc::now()),
        );
        sqlx::query!(
            "INSERT OR IGNORE INTO sessions (id, generation, created_at, updated_at) \
             VALUES (?, ?, ?, ?)",
            id,
            generation,
            created,
            updated,
        )
        .execute(&mut *tx)
        .await
        .context("cannot insert a session")?;
    }
    tx.commit().await.context("cannot commit the jobs")?;
    connection.close().await?;
    Ok(())
}

/// A time as the service stores it: RFC 3339 in UTC with milliseconds.
fn timestamp(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
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

// ----- rebuilding a session -------------------------------------------------------------------

struct RebuildFigures {
    cells: usize,
    /// The first job in the big session after each engine kill (it replays the history).
    rebuild_jobs: Vec<JobSample>,
    normal_jobs: Load,
    build_session: Duration,
}

const REPLAY_SESSION: &str = "bench-rebuild";
const OTHER_SESSION: &str = "bench-rebuild-other";

/// Builds a session of `REPLAY_CELLS` cells through the API, then `REPLAY_RUNS` times: kill -9
/// the engine child, let a job in another session absorb the engine's respawn, and time the
/// next job in the big session (which replays its whole history); normal jobs follow.
async fn measure_rebuild(setup: &Setup) -> Result<RebuildFigures> {
    progress(&format!("rebuild: a session of {REPLAY_CELLS} cells"));
    let server = Server::start(setup, &setup.database("rebuild")?).await?;
    let api = Api::new(&server);
    let building = Instant::now();
    for cell in replay_cells(REPLAY_CELLS) {
        let job = json!({"language": "metta", "code": cell, "sessionId": REPLAY_SESSION});
        let (status, body) = api.post("/api/v1/jobs?wait=30", &job, &[]).await?;
        ensure!(
            status == 200 && body["status"] == "succeeded",
            "cell {cell} answered {status}: {body}"
        );
    }
    let build_session = building.elapsed();

    progress(&format!("rebuild: {REPLAY_RUNS} engine kills and rebuilds"));
    let mut rebuild_jobs = Vec::new();
    let mut normal = Vec::new();
    for _ in 0..REPLAY_RUNS {
        kill_engine_child(server.pid()?).await?;
        run_metta_job(&api, Route::V1, OTHER_SESSION).await?;
        rebuild_jobs.push(run_metta_job(&api, Route::V1, REPLAY_SESSION).await?);
        for _ in 0..NORMAL_JOBS_PER_REPLAY_RUN {
            normal.push(run_metta_job(&api, Route::V1, REPLAY_SESSION).await?);
        }
    }
    server.stop().await?;
    Ok(RebuildFigures {
        cells: REPLAY_CELLS,
        rebuild_jobs,
        normal_jobs: Load::back_to_back(normal),
        build_session,
    })
}

/// kill -9 the server's engine child and waits until it is dead (a zombie or gone).
async fn kill_engine_child(server: u32) -> Result<()> {
    let engine = engine_child_of(server)
        .ok_or_else(|| anyhow!("the server (pid {server}) has no engine child"))?;
    signal(engine, libc::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(engine) {
        ensure!(
            Instant::now() < deadline,
            "the engine {engine} survived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The child of `server` whose command line has the argument `engine`, from /proc.
fn engine_child_of(server: u32) -> Option<u32> {
    let server = server.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 4 of /proc/PID/stat (after the parenthesised name) is the parent pid.
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let is_engine = cmdline.split(|byte| *byte == 0).any(|arg| arg == b"engine");
            (parent == server && is_engine).then_some(pid)
        })
}

/// Whether `pid` still runs: it exists and is not a zombie whose threads have all exited. (A
/// killed multi-threaded process shows `Z` as soon as its main thread is gone, but its parent
/// cannot reap it until the other threads are gone too.)
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    !(matches!(state, "Z" | "X") && threads <= 1)
}

// ----- the report ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Report {
    generated_at: String,
    cpus: usize,
    hyperon: String,
    program: &'static str,
    raw_engine: Summary,
    driver_step_loop: Summary,
    engine_child_round_trip: Summary,
    v1_one_client: Summary,
    v1_many_clients: Summary,
    legacy_one_client: Summary,
    legacy_many_clients: Summary,
    many_clients: usize,
    load_database_jobs: u64,
    v1_one_client_phases: Phases,
    v1_many_clients_phases: Phases,
    python_bare_spawn: Summary,
    python_job: Summary,
    python_job_phases: Phases,
    python_paced_job: Summary,
    python_paced_job_phases: Phases,
    startup: StartupReport,
    rebuild: RebuildReport,
    comparisons: Comparisons,
    targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
struct RebuildReport {
    cells: usize,
    build_session_s: f64,
    rebuild_job_ms: Vec<f64>,
    rebuild_job_running_ms: Vec<f64>,
    normal_job: Summary,
    /// Median rebuild job minus the normal job's p50.
    rebuild_extra_ms: f64,
    direct_cells_ms: Vec<f64>,
    driver_replay_ms: Vec<f64>,
    /// A real engine child building a session from the cells (no server, no database).
    engine_child_replay_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Comparisons {
    v1_throughput_ratio_one_client: f64,
    v1_throughput_ratio_many_clients: f64,
    legacy_throughput_ratio_one_client: f64,
    legacy_throughput_ratio_many_clients: f64,
    v1_p50_overhead_ms: f64,
    legacy_p50_overhead_ms: f64,
    v1_p50_ratio: f64,
    legacy_p50_ratio: f64,
    python_job_to_spawn_ratio: f64,
    /// The same with the idle time a learner leaves between runs.
    python_paced_job_to_spawn_ratio: f64,
    startup_ready_with_jobs_ms: f64,
    rebuild_to_direct_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Target {
    name: String,
    figure: String,
    met: bool,
}

impl Report {
    fn new(
        in_process: InProcess,
        engine_child: EngineChildFigures,
        service: ServiceFigures,
    ) -> Report {
        let raw = Summary::of(&in_process.raw);
        let v1_one = Summary::of(&service.v1_one.timed);
        let v1_many = Summary::of(&service.v1_many.timed);
        let legacy_one = Summary::of(&service.legacy_one.timed);
        let legacy_many = Summary::of(&service.legacy_many.timed);
        let python_bare = Summary::of(&service.python.bare_spawn);
        let python_job = Summary::of(&service.python.job.timed);
        let rebuild = rebuild_report(&service.rebuild, &in_process, &engine_child);
        let comparisons = Comparisons {
            v1_throughput_ratio_one_client: v1_one.throughput_per_s / raw.throughput_per_s,
            v1_throughput_ratio_many_clients: v1_many.throughput_per_s / raw.throughput_per_s,
            legacy_throughput_ratio_one_client: legacy_one.throughput_per_s / raw.throughput_per_s,
            legacy_throughput_ratio_many_clients: legacy_many.throughput_per_s
                / raw.throughput_per_s,
            v1_p50_overhead_ms: v1_one.p50_ms - raw.p50_ms,
            legacy_p50_overhead_ms: legacy_one.p50_ms - raw.p50_ms,
            v1_p50_ratio: v1_one.p50_ms / raw.p50_ms,
            legacy_p50_ratio: legacy_one.p50_ms / raw.p50_ms,
            python_job_to_spawn_ratio: python_job.p50_ms / python_bare.p50_ms,
            python_paced_job_to_spawn_ratio: Summary::of(&service.python.paced_job.timed).p50_ms
                / python_bare.p50_ms,
            startup_ready_with_jobs_ms: median(&service.startup.ready_with_jobs_ms),
            rebuild_to_direct_ratio: rebuild.rebuild_extra_ms / median(&rebuild.direct_cells_ms),
        };
        let targets = targets(&comparisons);
        Report {
            generated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            hyperon: in_process.hyperon.clone(),
            program: PROGRAM,
            driver_step_loop: Summary::of(&in_process.driver_step_loop),
            engine_child_round_trip: Summary::of(&engine_child.round_trip),
            raw_engine: raw,
            v1_one_client: v1_one,
            v1_many_clients: v1_many,
            legacy_one_client: legacy_one,
            legacy_many_clients: legacy_many,
            many_clients: MANY_CLIENTS,
            load_database_jobs: service.load_database_jobs,
            v1_one_client_phases: Phases::of(&service.v1_one),
            v1_many_clients_phases: Phases::of(&service.v1_many),
            python_bare_spawn: python_bare,
            python_job,
            python_job_phases: Phases::of(&service.python.job),
            python_paced_job: Summary::of(&service.python.paced_job.timed),
            python_paced_job_phases: Phases::of(&service.python.paced_job),
            startup: service.startup,
            rebuild,
            comparisons,
            targets,
        }
    }
}

fn rebuild_report(
    figures: &RebuildFigures,
    in_process: &InProcess,
    engine_child: &EngineChildFigures,
) -> RebuildReport {
    let normal_job = Summary::of(&figures.normal_jobs.timed);
    let rebuild_job_ms: Vec<f64> = figures
        .rebuild_jobs
        .iter()
        .map(|job| ms(job.latency))
        .collect();
    RebuildReport {
        cells: figures.cells,
        build_session_s: figures.build_session.as_secs_f64(),
        rebuild_job_running_ms: figures
            .rebuild_jobs
            .iter()
            .filter_map(|job| job.stamps.map(|stamps| stamps.running_ms))
            .collect(),
        rebuild_extra_ms: median(&rebuild_job_ms) - normal_job.p50_ms,
        rebuild_job_ms,
        normal_job,
        direct_cells_ms: in_process.direct_cells.iter().map(|d| ms(*d)).collect(),
        driver_replay_ms: in_process.driver_replay.iter().map(|d| ms(*d)).collect(),
        engine_child_replay_ms: engine_child.replay.iter().map(|d| ms(*d)).collect(),
    }
}

fn targets(c: &Comparisons) -> Vec<Target> {
    let percent = |ratio: f64| format!("{:.1}%", ratio * 100.0);
    vec![
        Target {
            name: format!("v1 throughput at {MANY_CLIENTS} clients ≥ 40% of the raw engine's"),
            figure: percent(c.v1_throughput_ratio_many_clients),
            met: c.v1_throughput_ratio_many_clients >= 0.40,
        },
        Target {
            name: format!(
                "legacy /run-metta throughput at {MANY_CLIENTS} clients ≥ 40% of the raw engine's"
            ),
            figure: percent(c.legacy_throughput_ratio_many_clients),
            met: c.legacy_throughput_ratio_many_clients >= 0.40,
        },
        Target {
            name: format!("v1 p50 at 1 client ≤ {P50_RATIO_TARGET}× the raw engine's p50"),
            figure: format!("{:.2}×", c.v1_p50_ratio),
            met: c.v1_p50_ratio <= P50_RATIO_TARGET,
        },
        Target {
            name: format!(
                "legacy /run-metta p50 at 1 client ≤ {P50_RATIO_TARGET}× the raw engine's p50"
            ),
            figure: format!("{:.2}×", c.legacy_p50_ratio),
            met: c.legacy_p50_ratio <= P50_RATIO_TARGET,
        },
        Target {
            name: format!(
                "Python job end to end ≤ 0.8× a bare `python -I` spawn (p50), at a learner's pace ({} ms idle before each job)",
                PYTHON_PACE.as_millis()
            ),
            figure: format!("{:.2}×", c.python_paced_job_to_spawn_ratio),
            met: c.python_paced_job_to_spawn_ratio <= 0.8,
        },
        Target {
            name: "Python job end to end ≤ 0.8× a bare `python -I` spawn (p50), back to back (each job then needs a whole interpreter start-up of CPU)".into(),
            figure: format!("{:.2}×", c.python_job_to_spawn_ratio),
            met: c.python_job_to_spawn_ratio <= 0.8,
        },
        Target {
            name: format!("start-up to ready ≤ 1 s with {STARTUP_JOBS} jobs"),
            figure: format!("{:.3} s", c.startup_ready_with_jobs_ms / 1000.0),
            met: c.startup_ready_with_jobs_ms <= 1000.0,
        },
        Target {
            name: format!(
                "rebuilding a {REPLAY_CELLS}-cell session ≤ 2× running the cells directly"
            ),
            figure: format!("{:.2}×", c.rebuild_to_direct_ratio),
            met: c.rebuild_to_direct_ratio <= 2.0,
        },
    ]
}

fn render_markdown(r: &Report) -> String {
    let mut out = vec![
        "# metta-learner-backend benchmark".to_string(),
        String::new(),
        format!(
            "{} · {} CPU(s) · hyperon {} · program `{}` · one run, this machine; \
             ratios matter more than absolutes",
            r.generated_at, r.cpus, r.hyperon, r.program
        ),
    ];
    out.extend(results_table(r));
    out.extend(comparisons_table(r));
    out.extend(targets_list(r));
    out.extend(where_the_time_goes(r));
    out.push(String::new());
    out.join("\n")
}

/// Throughput and latency of every measurement that has them.
fn results_table(r: &Report) -> Vec<String> {
    let row = |name: &str, clients: &str, s: &Summary, unit: &str| {
        format!(
            "| {name} | {clients} | {} | {:.0} {unit}/s | {:.3} | {:.3} |",
            s.n, s.throughput_per_s, s.p50_ms, s.p99_ms
        )
    };
    let many = r.many_clients.to_string();
    let v1 = "service v1 `POST /api/v1/jobs?wait=30`";
    let legacy = "service legacy `POST /run-metta`";
    let on_full = format!(
        "service v1, on the start-up database ({} jobs)",
        r.startup.jobs
    );
    let raw = "raw engine: `metta.run` in-process (pyo3 + hyperon, one MeTTa)";
    let spawn = "bare `.venv/bin/python -I -c \"print(1)\"` spawn";
    vec![
        String::new(),
        "| measurement | clients | N | throughput | p50 ms | p99 ms |".into(),
        "|---|---:|---:|---:|---:|---:|".into(),
        row(raw, "–", &r.raw_engine, "runs"),
        row(v1, "1", &r.v1_one_client, "jobs"),
        row(v1, &many, &r.v1_many_clients, "jobs"),
        row(legacy, "1", &r.legacy_one_client, "jobs"),
        row(legacy, &many, &r.legacy_many_clients, "jobs"),
        row(&on_full, "1", &r.startup.v1_job_with_jobs, "jobs"),
        row(spawn, "–", &r.python_bare_spawn, "spawns"),
        row(
            "Python job end to end (v1, `print(1)`)",
            "1",
            &r.python_job,
            "jobs",
        ),
        String::new(),
        format!(
            "The service rows at 1 and {} clients share one server, whose database grew from \
             0 to {} jobs while they ran (v1 and legacy alternate in blocks v1, legacy, \
             legacy, v1); a job's cost grows with the jobs table, see the {}-job row.",
            r.many_clients, r.load_database_jobs, r.startup.jobs
        ),
    ]
}

/// The ratios and differences the targets are about.
fn comparisons_table(r: &Report) -> Vec<String> {
    let c = &r.comparisons;
    let s = &r.startup;
    let rb = &r.rebuild;
    let many = r.many_clients;
    vec![
        String::new(),
        "| comparison | figure |".into(),
        "|---|---:|".into(),
        format!(
            "| throughput / raw engine, v1 at 1 · {many} clients | {:.1}% · {:.1}% |",
            c.v1_throughput_ratio_one_client * 100.0,
            c.v1_throughput_ratio_many_clients * 100.0
        ),
        format!(
            "| throughput / raw engine, legacy at 1 · {many} clients | {:.1}% · {:.1}% |",
            c.legacy_throughput_ratio_one_client * 100.0,
            c.legacy_throughput_ratio_many_clients * 100.0
        ),
        format!(
            "| p50 per job / raw p50 (1 client), v1 · legacy | {:.2}× · {:.2}× |",
            c.v1_p50_ratio, c.legacy_p50_ratio
        ),
        format!(
            "| p50 overhead per job over raw (1 client), v1 · legacy | {:.3} ms · {:.3} ms |",
            c.v1_p50_overhead_ms, c.legacy_p50_overhead_ms
        ),
        format!(
            "| Python job p50 / bare spawn p50 | {:.2}× ({:.2} / {:.2} ms) |",
            c.python_job_to_spawn_ratio, r.python_job.p50_ms, r.python_bare_spawn.p50_ms
        ),
        format!(
            "| start-up to ready, {} jobs (median of {}) · empty database | {:.0} ms · {:.0} ms |",
            s.jobs,
            s.ready_with_jobs_ms.len(),
            c.startup_ready_with_jobs_ms,
            median(&s.ready_empty_ms)
        ),
        format!(
            "| rebuild of a {}-cell session (median job {:.1} ms − normal job {:.2} ms) / \
             the cells in-process ({:.1} ms) | {:.2}× ({:.1} ms) |",
            rb.cells,
            median(&rb.rebuild_job_ms),
            rb.normal_job.p50_ms,
            median(&rb.direct_cells_ms),
            c.rebuild_to_direct_ratio,
            rb.rebuild_extra_ms
        ),
    ]
}

/// One line per target: met or not, and the figure.
fn targets_list(r: &Report) -> Vec<String> {
    let mut out = vec![String::new(), "Targets:".into(), String::new()];
    for target in &r.targets {
        let verdict = if target.met { "met" } else { "not met" };
        out.push(format!(
            "- **{verdict}**: {} — {}",
            target.name, target.figure
        ));
    }
    out
}

/// The layers between the engine and the service, and what start-up and Python jobs spend.
fn where_the_time_goes(r: &Report) -> Vec<String> {
    let p1 = &r.v1_one_client_phases;
    let pm = &r.v1_many_clients_phases;
    let py = &r.python_job_phases;
    let paced = &r.python_paced_job_phases;
    let s = &r.startup;
    let rb = &r.rebuild;
    vec![
        String::new(),
        "Where the time goes (p50 unless said; job phases are means of the jobs' own ms timestamps):".into(),
        String::new(),
        "| layer | ms |".into(),
        "|---|---:|".into(),
        format!("| `metta.run` in-process | {:.3} |", r.raw_engine.p50_ms),
        format!(
            "| the driver's step loop (`_run_stepwise`) in-process | {:.3} |",
            r.driver_step_loop.p50_ms
        ),
        format!(
            "| round trip to a real `engine` child (JSON over pipes, markers, `driver.handle`) | {:.3} |",
            r.engine_child_round_trip.p50_ms
        ),
        format!("| v1 job end to end, 1 client | {:.3} |", r.v1_one_client.p50_ms),
        format!(
            "| v1, 1 client: accepted → claimed · claimed → finished · outside both (HTTP, commit, wake-up, re-read) | {:.2} · {:.2} · {:.2} |",
            p1.created_to_started_ms, p1.started_to_finished_ms, p1.outside_ms
        ),
        format!(
            "| v1, {} clients: accepted → claimed · claimed → finished · outside both | {:.2} · {:.2} · {:.2} |",
            r.many_clients, pm.created_to_started_ms, pm.started_to_finished_ms, pm.outside_ms
        ),
        format!(
            "| Python: bare spawn · job end to end, back to back · job end to end, {} ms idle before each | {:.2} · {:.2} · {:.2} |",
            PYTHON_PACE.as_millis(), r.python_bare_spawn.p50_ms, r.python_job.p50_ms, r.python_paced_job.p50_ms
        ),
        format!(
            "| Python job back to back: accepted → claimed · claimed → finished · outside both | {:.2} · {:.2} · {:.2} |",
            py.created_to_started_ms, py.started_to_finished_ms, py.outside_ms
        ),
        format!(
            "| Python job paced: accepted → claimed · claimed → finished · outside both | {:.2} · {:.2} · {:.2} |",
            paced.created_to_started_ms, paced.started_to_finished_ms, paced.outside_ms
        ),
        format!(
            "| start-up: one `python -I` import-hyperon probe · spawn → \"listening\" (median), {} jobs · empty | {:.0} · {:.0} · {:.0} |",
            s.jobs,
            s.hyperon_probe_ms,
            median(&s.listening_with_jobs_ms),
            median(&s.listening_empty_ms)
        ),
        format!(
            "| v1 job, 1 client, on the database with {} jobs: end to end · accepted → claimed · claimed → finished · outside both | {:.2} · {:.2} · {:.2} · {:.2} |",
            s.jobs,
            s.v1_job_with_jobs.p50_ms,
            s.v1_job_with_jobs_phases.created_to_started_ms,
            s.v1_job_with_jobs_phases.started_to_finished_ms,
            s.v1_job_with_jobs_phases.outside_ms
        ),
        format!(
            "| `GET /health` once ready: {} jobs · empty | {:.2} · {:.2} |",
            s.jobs, s.health_with_jobs_p50_ms, s.health_empty_p50_ms
        ),
        format!(
            "| {} cells, medians: rebuild job claimed → finished · an `engine` child building the session · the driver's `_replay` in-process · `metta.run` of each cell in-process | {:.1} · {:.1} · {:.1} · {:.1} |",
            rb.cells,
            median(&rb.rebuild_job_running_ms),
            median(&rb.engine_child_replay_ms),
            median(&rb.driver_replay_ms),
            median(&rb.direct_cells_ms)
        ),
    ]
}

fn write_results(markdown: &str, report: &Report) -> Result<()> {
    let folder = Path::new(RESULTS_DIR);
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let md = folder.join("latest.md");
    std::fs::write(&md, markdown).with_context(|| format!("cannot write {}", md.display()))?;
    let json_path = folder.join("latest.json");
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    eprintln!("bench: wrote {} and {}", md.display(), json_path.display());
    Ok(())
}
