//! `--scaling`: the same service on one PostgreSQL with 1, 2 and 3 server processes, under a
//! workload of realistic jobs (a MeTTa program of about 20 ms of engine time, in many
//! sessions) that keeps every process loaded; writes `bench/results/scaling.md`. Each process
//! count is a deployment of its own (a fresh database, created and dropped on the server
//! `BENCH_PG_ADMIN_URL` names, and its servers), all started and warmed up first.
//!
//! This machine's speed swings by half within a minute, and a row measured a minute after
//! another compared two machines. So the rows are measured in short windows, taking turns:
//! each round runs every deployment once, and each figure is the median over the rounds.
//! Before each service window, the same program runs in as many copies of the engine alone
//! (one hot `MeTTa()` per process, no service, `--engine-loop`): how far this machine's cores
//! scale the work itself at that moment, which the service's curve is read against.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use metta_learner_backend::SESSION_REPLAYS;
use serde_json::json;

use crate::api::Api;
use crate::progress;
use crate::server::Server;
use crate::setup::Setup;
use crate::stats::{median, ms, percentile};
use crate::workloads::job_stamps;

/// Sessions (one client each, each run with a fresh `codeId` as the site sends), and the
/// program with its answer. `!(fib 6)` costs a hot
/// `MeTTa()` 20 ms on this machine on a fast day; each row reports what the jobs' own records
/// measured (`startedAt` → `finishedAt`), so the claim is checked on every run.
const CLIENTS: usize = 48;
const DEFINITION: &str = "(= (fib $n) (if (< $n 2) $n (+ (fib (- $n 1)) (fib (- $n 2)))))";
const PROGRAM: &str = "!(fib 6)";
const ANSWER: &str = "[8]\n";
const ENGINE_ANSWER: &str = "[[8]]";
/// Process counts, rounds, and the windows of one round.
///
/// A service window counts the jobs answered within it: every client sends its next job as
/// soon as its last one answers until the window closes, so every process is loaded the
/// whole time. (A fixed number of jobs per client measured a drain instead: a session stays on
/// the host that first ran it, and a host whose sessions had finished sat idle while another
/// worked through its own, up to a quarter of the run with 28 sessions against 20.)
const PROCESS_COUNTS: [usize; 3] = [1, 2, 3];
const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_secs(5);
const ENGINE_ALONE_WINDOW: Duration = Duration::from_secs(3);

/// Runs one SQL command with `psql` on `url`; returns what it printed (unaligned, no headers).
fn psql(url: &str, sql: &str) -> Result<String> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .context("cannot run psql")?;
    ensure!(
        output.status.success(),
        "psql {sql} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

pub(crate) async fn measure(setup: &Setup) -> Result<()> {
    let admin = std::env::var("BENCH_PG_ADMIN_URL").context(
        "--scaling needs BENCH_PG_ADMIN_URL (scripts/bench.sh --scaling starts the project's PostgreSQL)",
    )?;
    let mut deployments = Vec::new();
    for processes in PROCESS_COUNTS {
        let deployment = Deployment::start(setup, &admin, processes).await;
        match deployment {
            Ok(deployment) => deployments.push(deployment),
            Err(err) => {
                stop_all(deployments).await;
                return Err(err);
            }
        }
    }
    let rows = measure_rounds(&mut deployments).await;
    let mut splits = Vec::new();
    for deployment in &deployments {
        splits.push(sessions_per_process(&deployment.url).unwrap_or_else(|err| format!("{err}")));
    }
    stop_all(deployments).await;
    let rows = rows?;
    let markdown = render(&rows, &splits);
    print!("{markdown}");
    std::fs::create_dir_all("bench/results").context("cannot create bench/results")?;
    std::fs::write("bench/results/scaling.md", &markdown)
        .context("cannot write bench/results/scaling.md")?;
    Ok(())
}

/// What one deployment measured over the rounds.
#[derive(Default)]
struct Row {
    processes: usize,
    /// Per round: the engine alone in as many processes (runs/s), the service (jobs/s).
    engine_alone: Vec<f64>,
    service: Vec<f64>,
    /// Sessions rebuilt by replay in the windows (moved between hosts, or evicted).
    replays: f64,
    /// Every counted job's `startedAt` → `finishedAt`, and its latency as the client saw it.
    running_ms: Vec<f64>,
    latency_ms: Vec<f64>,
}

async fn measure_rounds(deployments: &mut [Deployment]) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = deployments
        .iter()
        .map(|deployment| Row {
            processes: deployment.apis.len(),
            ..Row::default()
        })
        .collect();
    for round in 1..=ROUNDS {
        for (deployment, row) in deployments.iter_mut().zip(&mut rows) {
            progress(&format!(
                "scaling: round {round}/{ROUNDS}, {} process(es)",
                row.processes
            ));
            row.engine_alone.push(engine_alone(row.processes).await?);
            let window = deployment.window().await?;
            row.service.push(window.throughput);
            row.replays += window.replays;
            row.running_ms.extend(window.running_ms);
            row.latency_ms.extend(window.latency_ms);
        }
    }
    Ok(rows)
}

fn render(rows: &[Row], splits: &[String]) -> String {
    let mut markdown = format!(
        "## Scaling on one PostgreSQL\n\n{CLIENTS} clients per deployment, each with its own \
         session, each sending `{PROGRAM}` (after `fib` is defined) again as soon as the last \
         one answers; requests spread round-robin over the processes, `?wait=30`. The \
         deployments (1, 2 and 3 processes, each on its own database) take turns in {ROUNDS} \
         rounds of a {window} s window each, and each figure is the median over the rounds \
         (the machine's speed drifts within a minute). Before each window, the engine alone: \
         as many processes each run `{PROGRAM}` in one hot `MeTTa()` for {alone} s, no service \
         (what this machine's cores do with the work at that moment). × one is the median of \
         the rounds' own ratios, with their range. Engine ms per job is the median of the jobs' \
         own `startedAt` → `finishedAt`; replays are sessions rebuilt from their history in the \
         windows; sessions per process is where the sessions ran.\n\n\
         | processes | engine alone, runs/s | × one | service, jobs/s | × one process | of engine alone | engine ms per job | replays | sessions per process | p50 ms | p99 ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        window = WINDOW.as_secs(),
        alone = ENGINE_ALONE_WINDOW.as_secs(),
    );
    let one = &rows[0];
    for (row, split) in rows.iter().zip(splits) {
        let engine_ratios = ratios(&row.engine_alone, &one.engine_alone);
        let service_ratios = ratios(&row.service, &one.service);
        let shares = ratios(&row.service, &row.engine_alone);
        markdown.push_str(&format!(
            "| {} | {:.1} | {} | {:.1} | {} | {:.0}% | {:.1} | {:.0} | {split} | {:.1} | {:.1} |\n",
            row.processes,
            median(&row.engine_alone),
            with_range(&engine_ratios),
            median(&row.service),
            with_range(&service_ratios),
            100.0 * median(&shares),
            median(&row.running_ms),
            row.replays,
            median(&row.latency_ms),
            percentile(&row.latency_ms, 0.99),
        ));
    }
    markdown
}

/// Round by round, `of[i] / to[i]`.
fn ratios(of: &[f64], to: &[f64]) -> Vec<f64> {
    of.iter().zip(to).map(|(a, b)| a / b).collect()
}

/// The median and the range, e.g. `1.71 (1.58–1.83)`; just the median when all are equal.
fn with_range(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if high - low < 0.005 {
        return format!("{:.2}", median(values));
    }
    format!("{:.2} ({low:.2}–{high:.2})", median(values))
}

/// One deployment: its database and its servers, warmed up (every session has its definition).
struct Deployment {
    admin: String,
    name: String,
    url: String,
    servers: Vec<Server>,
    apis: Vec<Api>,
}

/// What one service window measured.
struct Window {
    throughput: f64,
    replays: f64,
    running_ms: Vec<f64>,
    latency_ms: Vec<f64>,
}

impl Deployment {
    async fn start(setup: &Setup, admin: &str, processes: usize) -> Result<Deployment> {
        progress(&format!(
            "scaling: starting {processes} process(es) on one PostgreSQL"
        ));
        let (base, _) = admin
            .rsplit_once('/')
            .ok_or_else(|| anyhow!("BENCH_PG_ADMIN_URL ends in /DATABASE"))?;
        let name = format!("bench_scaling_{processes}_{}", std::process::id());
        psql(
            admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(admin, &format!("CREATE DATABASE {name}"))?;
        let mut deployment = Deployment {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
            servers: Vec::new(),
            apis: Vec::new(),
        };
        if let Err(err) = deployment.start_servers(setup, processes).await {
            deployment.stop().await;
            return Err(err);
        }
        Ok(deployment)
    }

    async fn start_servers(&mut self, setup: &Setup, processes: usize) -> Result<()> {
        for i in 0..processes {
            let folder = setup.work.path().join(format!("scaling-{processes}-{i}"));
            std::fs::create_dir_all(&folder).context("cannot create a folder")?;
            let host = format!("bench-{i}");
            let server = Server::start_on(
                setup,
                &self.url,
                &folder,
                &[("HOST_ID", &host), ("MAX_LIVE_SESSIONS", "128")],
            )
            .await?;
            self.apis.push(Api::new(&server));
            self.servers.push(server);
        }
        // Warm-up, untimed: each session gets its definition (and the engines their start).
        let mut warm = Vec::new();
        for client in 0..CLIENTS {
            let api = self.apis[client % self.apis.len()].clone();
            warm.push(tokio::spawn(async move {
                let body = json!({"language": "metta", "sessionId": format!("scale-{client}"), "code": DEFINITION, "codeId": fresh_code_id()});
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
        Ok(())
    }

    /// One window of load; returns once every client's last job has answered.
    async fn window(&self) -> Result<Window> {
        let replays_before = replays(&self.apis).await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let apis = self.apis.clone();
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut job = client;
                while started.elapsed() < WINDOW {
                    let api = &apis[job % apis.len()];
                    job += 1;
                    let body = json!({"language": "metta", "sessionId": format!("scale-{client}"), "code": PROGRAM, "codeId": fresh_code_id()});
                    let sent = Instant::now();
                    let (status, answer) = api.post("/api/v1/jobs?wait=30", &body, &[]).await?;
                    ensure!(
                        status == 200 && answer["result"] == ANSWER,
                        "a job answered {status}: {answer}"
                    );
                    if started.elapsed() > WINDOW {
                        break;
                    }
                    let stamps = job_stamps(&answer)
                        .ok_or_else(|| anyhow!("a job has no startedAt/finishedAt: {answer}"))?;
                    samples.push((ms(sent.elapsed()), stamps.running_ms));
                }
                Ok::<_, anyhow::Error>(samples)
            }));
        }
        let mut latency_ms = Vec::new();
        let mut running_ms = Vec::new();
        for task in tasks {
            for (latency, running) in task.await.context("client task")?? {
                latency_ms.push(latency);
                running_ms.push(running);
            }
        }
        Ok(Window {
            throughput: latency_ms.len() as f64 / WINDOW.as_secs_f64(),
            replays: replays(&self.apis).await? - replays_before,
            running_ms,
            latency_ms,
        })
    }

    /// Stops the servers and drops the database (what fails is reported, not returned: the
    /// rest is still cleaned up).
    async fn stop(self) {
        for server in self.servers {
            if let Err(err) = server.stop().await {
                eprintln!("bench: a server did not stop cleanly: {err:#}");
            }
        }
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(err) = psql(&self.admin, &drop) {
            eprintln!("bench: {err:#}");
        }
    }
}

async fn stop_all(deployments: Vec<Deployment>) {
    for deployment in deployments {
        deployment.stop().await;
    }
}

/// `--engine-loop MS`: one copy of the engine alone (`engine_alone` starts these).
pub(crate) fn engine_loop_child(setup: &Setup, window_ms: Option<&str>) -> Result<()> {
    let window_ms: u64 = window_ms
        .ok_or_else(|| anyhow!("--engine-loop needs a window in ms"))?
        .parse()
        .context("--engine-loop needs a window in ms")?;
    crate::in_process::engine_loop(
        setup,
        DEFINITION,
        PROGRAM,
        ENGINE_ANSWER,
        Duration::from_millis(window_ms),
    )
}

/// Runs per second of `copies` processes each running `PROGRAM` in one hot `MeTTa()` over the
/// same window (each waits, warm, until all are; then all start at once).
async fn engine_alone(copies: usize) -> Result<f64> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let me = std::env::current_exe().context("cannot find the benchmark's own binary")?;
    let mut children = Vec::new();
    for _ in 0..copies {
        let mut child = tokio::process::Command::new(&me)
            .args([
                "--engine-loop",
                &ENGINE_ALONE_WINDOW.as_millis().to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an engine-alone copy")?;
        let stdout = child.stdout.take().context("no stdout")?;
        children.push((child, BufReader::new(stdout).lines()));
    }
    for (_, lines) in &mut children {
        let line = lines.next_line().await?.unwrap_or_default();
        ensure!(
            line == "ready",
            "an engine-alone copy said {line:?}, not ready"
        );
    }
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().context("no stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
    }
    let mut rate = 0.0;
    for (mut child, mut lines) in children {
        let line = lines.next_line().await?.unwrap_or_default();
        let (runs, seconds) = line
            .split_once(' ')
            .and_then(|(runs, seconds)| {
                Some((runs.parse::<f64>().ok()?, seconds.parse::<f64>().ok()?))
            })
            .ok_or_else(|| anyhow!("an engine-alone copy said {line:?}"))?;
        rate += runs / seconds;
        ensure!(child.wait().await?.success(), "an engine-alone copy failed");
    }
    Ok(rate)
}

/// How many sessions each process (host) ran the timed jobs of, from the deployment's
/// database (a session that moved counts on both).
fn sessions_per_process(url: &str) -> Result<String> {
    psql(
        url,
        &format!(
            "SELECT string_agg(n::TEXT, ' / ' ORDER BY host) FROM \
             (SELECT host, COUNT(DISTINCT session_id) AS n FROM jobs \
              WHERE code = '{PROGRAM}' GROUP BY host) AS per_host"
        ),
    )
}

/// A fresh `codeId` per run, as the playground site sends.
fn fresh_code_id() -> String {
    format!("scale-{}", uuid::Uuid::new_v4().simple())
}

/// Histories the engines were sent to replay, over all servers (`GET /metrics`).
async fn replays(apis: &[Api]) -> Result<f64> {
    let mut total = 0.0;
    for api in apis {
        total += api.counter(SESSION_REPLAYS).await?;
    }
    Ok(total)
}
