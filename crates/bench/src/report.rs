//! The report: every figure summarised, the comparisons the targets are about, the targets
//! met or not, where the time goes; printed as markdown and written to
//! `bench/results/latest.md` and `latest.json` (whose shapes the docs and earlier runs share:
//! keep them).

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::engine_child::EngineChildFigures;
use crate::in_process::InProcess;
use crate::rebuild::RebuildFigures;
use crate::service::ServiceFigures;
use crate::startup::StartupReport;
use crate::stats::{median, ms, Summary};
use crate::workloads::Phases;
use crate::{
    MANY_CLIENTS, P50_RATIO_TARGET, PROGRAM, PYTHON_PACE, REPLAY_CELLS, RESULTS_DIR, STARTUP_JOBS,
};

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) generated_at: String,
    pub(crate) cpus: usize,
    pub(crate) hyperon: String,
    pub(crate) program: &'static str,
    pub(crate) raw_engine: Summary,
    pub(crate) driver_step_loop: Summary,
    pub(crate) engine_child_round_trip: Summary,
    pub(crate) v1_one_client: Summary,
    pub(crate) v1_many_clients: Summary,
    pub(crate) legacy_one_client: Summary,
    pub(crate) legacy_many_clients: Summary,
    pub(crate) many_clients: usize,
    pub(crate) load_database_jobs: u64,
    pub(crate) v1_one_client_phases: Phases,
    pub(crate) v1_many_clients_phases: Phases,
    pub(crate) python_bare_spawn: Summary,
    pub(crate) python_job: Summary,
    pub(crate) python_job_phases: Phases,
    pub(crate) python_paced_job: Summary,
    pub(crate) python_paced_job_phases: Phases,
    pub(crate) startup: StartupReport,
    pub(crate) rebuild: RebuildReport,
    pub(crate) comparisons: Comparisons,
    pub(crate) targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RebuildReport {
    pub(crate) cells: usize,
    pub(crate) build_session_s: f64,
    pub(crate) rebuild_job_ms: Vec<f64>,
    pub(crate) rebuild_job_running_ms: Vec<f64>,
    pub(crate) normal_job: Summary,
    /// Median rebuild job minus the normal job's p50.
    pub(crate) rebuild_extra_ms: f64,
    pub(crate) direct_cells_ms: Vec<f64>,
    pub(crate) driver_replay_ms: Vec<f64>,
    /// A real engine child building a session from the cells (no server, no database).
    pub(crate) engine_child_replay_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Comparisons {
    pub(crate) v1_throughput_ratio_one_client: f64,
    pub(crate) v1_throughput_ratio_many_clients: f64,
    pub(crate) legacy_throughput_ratio_one_client: f64,
    pub(crate) legacy_throughput_ratio_many_clients: f64,
    pub(crate) v1_p50_overhead_ms: f64,
    pub(crate) legacy_p50_overhead_ms: f64,
    pub(crate) v1_p50_ratio: f64,
    pub(crate) legacy_p50_ratio: f64,
    pub(crate) python_job_to_spawn_ratio: f64,
    /// The same with the idle time a learner leaves between runs.
    pub(crate) python_paced_job_to_spawn_ratio: f64,
    pub(crate) startup_ready_with_jobs_ms: f64,
    pub(crate) rebuild_to_direct_ratio: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) figure: String,
    pub(crate) met: bool,
}

impl Report {
    pub(crate) fn new(
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

pub(crate) fn render_markdown(r: &Report) -> String {
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
            "| the driver's step loop (`_run_stepwise`, native once checked, as in the engine) in-process | {:.3} |",
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

pub(crate) fn write_results(markdown: &str, report: &Report) -> Result<()> {
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
