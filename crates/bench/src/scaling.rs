//! `--scaling`: the same service on one PostgreSQL with 1, 2 and 3 server processes, under a
//! workload of realistic jobs (a MeTTa program of about 20 ms of engine time, in many
//! sessions); writes `bench/results/scaling.md`. Each process count gets a fresh database,
//! created and dropped on the server `BENCH_PG_ADMIN_URL` names.

use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use metta_learner_backend::SESSION_REPLAYS;
use serde_json::json;

use crate::api::Api;
use crate::progress;
use crate::server::Server;
use crate::setup::Setup;
use crate::stats::median;
use crate::workloads::job_stamps;

/// Sessions (one client each), jobs per client in the timed window, and the program with its
/// answer. `!(fib 6)` costs a hot `MeTTa()` 20 ms on this machine on a fast day; each row
/// reports what the jobs' own records measured (`startedAt` → `finishedAt`), so the claim is
/// checked on every run.
const CLIENTS: usize = 48;
const JOBS_PER_CLIENT: usize = 10;
const DEFINITION: &str = "(= (fib $n) (if (< $n 2) $n (+ (fib (- $n 1)) (fib (- $n 2)))))";
const PROGRAM: &str = "!(fib 6)";
const ANSWER: &str = "[8]\n";

fn psql(url: &str, sql: &str) -> Result<()> {
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .status()
        .context("cannot run psql")?;
    ensure!(status.success(), "psql {sql} failed");
    Ok(())
}

pub(crate) async fn measure(setup: &Setup) -> Result<()> {
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
    let one = rows[0].1.throughput;
    let mut markdown = format!(
        "## Scaling on one PostgreSQL\n\n{CLIENTS} clients, each with its own session, \
         {JOBS_PER_CLIENT} jobs each (`{PROGRAM}` after `fib` is defined), requests spread \
         round-robin over the processes, `?wait=30`. Engine ms per job is the median of the \
         jobs' own `startedAt` → `finishedAt`; replays are sessions rebuilt from their history \
         during the timed jobs.\n\n\
         | processes | jobs/s | × one process | engine ms per job | replays | p50 ms | p99 ms |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for (processes, row) in &rows {
        markdown.push_str(&format!(
            "| {processes} | {:.1} | {:.2} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
            row.throughput,
            row.throughput / one,
            row.running_ms,
            row.replays,
            row.p50_ms,
            row.p99_ms
        ));
    }
    print!("{markdown}");
    std::fs::create_dir_all("bench/results").context("cannot create bench/results")?;
    std::fs::write("bench/results/scaling.md", &markdown)
        .context("cannot write bench/results/scaling.md")?;
    Ok(())
}

/// One row of the curve: throughput, sessions rebuilt, the jobs' median running time and the
/// clients' latency.
struct Row {
    throughput: f64,
    /// Sessions rebuilt by replay in the timed window (moved between hosts, or evicted).
    replays: f64,
    running_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Histories the engines were sent to replay, over all servers (`GET /metrics`).
async fn replays(apis: &[Api]) -> Result<f64> {
    let mut total = 0.0;
    for api in apis {
        total += api.counter(SESSION_REPLAYS).await?;
    }
    Ok(total)
}

/// The curve's row for `processes` servers on `url`.
async fn run_with(setup: &Setup, url: &str, processes: usize) -> Result<Row> {
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
    let replays_before = replays(&apis).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let apis = apis.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(JOBS_PER_CLIENT);
            for job in 0..JOBS_PER_CLIENT {
                let api = &apis[(client + job) % apis.len()];
                let body = json!({"language": "metta", "sessionId": format!("scale-{client}"), "code": PROGRAM});
                let sent = Instant::now();
                let (status, answer) = api.post("/api/v1/jobs?wait=30", &body, &[]).await?;
                ensure!(
                    status == 200 && answer["result"] == ANSWER,
                    "a job answered {status}: {answer}"
                );
                let stamps = job_stamps(&answer)
                    .ok_or_else(|| anyhow!("a job has no startedAt/finishedAt: {answer}"))?;
                samples.push((sent.elapsed(), stamps.running_ms));
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut latencies = Vec::new();
    let mut running = Vec::new();
    for task in tasks {
        for (latency, running_ms) in task.await.context("client task")?? {
            latencies.push(latency);
            running.push(running_ms);
        }
    }
    let wall = started.elapsed();
    let replayed = replays(&apis).await? - replays_before;
    for server in servers {
        server.stop().await?;
    }
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[index].as_secs_f64() * 1000.0
    };
    Ok(Row {
        throughput: latencies.len() as f64 / wall.as_secs_f64(),
        replays: replayed,
        running_ms: median(&running),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}
