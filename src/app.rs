//! Assembles the service: opens the store (recovering jobs a crash interrupted), probes the
//! Python environment, binds the listener, and runs the HTTP server and the one worker until
//! the shutdown token fires. Tests and `main` both go through `Application`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{EngineSettings, EngineSupervisor};
use crate::http::{router, serve, AppState, ConnectionLimits};
use crate::job_signals::JobSignals;
use crate::python_runner::PythonRunner;
use crate::queue::JobQueue;
use crate::sandbox::{plan_containment, prepare_scratch, ChildLimits, Containment};
use crate::store::Store;
use crate::worker::Worker;

/// How long the probe of the Python environment may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The service, built and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    config: Arc<Config>,
    store: Store,
    signals: Arc<JobSignals>,
    worker: Worker,
}

impl Application {
    /// Opens the database, recovers interrupted jobs, probes Python and binds the port.
    pub async fn build(mut config: Config) -> anyhow::Result<Application> {
        config.validate().map_err(anyhow::Error::msg)?;
        config.python = std::path::absolute(&config.python)
            .with_context(|| format!("PYTHON path {} is not usable", config.python.display()))?;

        protect_server_process();
        let store = Store::open(&config.database_url, config.sqlite_synchronous)
            .await
            .with_context(|| format!("cannot open the database {}", config.database_url))?;
        let recovery = store.recover_interrupted_jobs().await?;
        if recovery.requeued > 0 || recovery.failed > 0 {
            tracing::warn!(
                requeued = recovery.requeued,
                failed = recovery.failed,
                "recovered jobs interrupted by the previous stop"
            );
        }

        let sys_path = match probe_python(&config.python).await {
            Ok(path) => path,
            Err(problem) => {
                tracing::warn!(
                    "MeTTa engine unavailable: {problem}. Run scripts/setup.sh to create .venv with hyperon, or set PYTHON."
                );
                Vec::new()
            }
        };
        let executable = std::env::current_exe().context("cannot find the server's executable")?;
        store.restrict_file_access();
        let scratch = config.scratch_root();
        prepare_scratch(&scratch)
            .with_context(|| format!("cannot prepare the scratch folder {}", scratch.display()))?;
        let plan = plan_containment(
            config.containment_settings(),
            &[
                (config.python.as_path(), &["-I", "-c", "import hyperon"]),
                (executable.as_path(), &["--version"]),
            ],
        );
        for warning in &plan.warnings {
            tracing::warn!("containment: {warning}");
        }
        let engine = EngineSupervisor::new(EngineSettings {
            executable,
            sys_path,
            max_live_sessions: config.max_live_sessions,
            memory_budget_mb: config.engine_memory_budget_mb(),
            kill_grace: Duration::from_millis(config.engine_kill_grace_ms),
            replay_timeout: Duration::from_secs(config.replay_timeout_secs),
            max_output_bytes: config.max_output_bytes,
            containment: Containment {
                limits: ChildLimits {
                    memory_bytes: config.engine_memory_mb.saturating_mul(1024 * 1024),
                    cpu_secs: None,
                    ..plan.engine.limits
                },
                ..plan.engine
            },
            scratch: scratch.clone(),
        });
        let python = PythonRunner::new(
            config.python.clone(),
            plan.python,
            plan.python_alternate,
            scratch,
            config.max_output_bytes,
        );

        let address = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let signals = Arc::new(JobSignals::new());
        let worker = Worker {
            store: store.clone(),
            signals: signals.clone(),
            python,
            engine,
            max_batch: usize::try_from(config.max_batch_jobs).unwrap_or(usize::MAX),
        };
        Ok(Application {
            listener,
            config: Arc::new(config),
            store,
            signals,
            worker,
        })
    }

    /// The bound address (the real port when `PORT=0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires, then stops accepting, lets the running job finish within
    /// the grace period, and closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            config,
            store,
            signals,
            worker,
        } = self;
        let queue = JobQueue::new(
            store.clone(),
            signals,
            config.max_queued_jobs,
            shutdown.clone(),
        );
        let metrics = crate::service_metrics::install();
        if metrics.is_none() {
            tracing::warn!("metrics unavailable: another recorder is installed in this process");
        }
        if let Some(handle) = metrics.clone() {
            tokio::spawn(keep_metrics_tidy(handle, shutdown.clone()));
        }
        let app = router(AppState::new(queue, config.clone(), metrics));
        let worker = tokio::spawn(worker.run(shutdown.clone(), config.shutdown_grace()));

        tracing::info!("listening on http://{}", listener.local_addr()?);
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            drain_timeout: config.shutdown_grace() + Duration::from_secs(2),
        };
        serve(listener, app, limits, shutdown.clone()).await;
        tracing::info!("stopped accepting requests; waiting for the worker");
        if let Err(err) = worker.await {
            tracing::error!("the worker task failed: {err}");
        }
        store.close().await;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// Folds recorded histogram samples into their buckets now and then, so memory stays flat
/// between scrapes.
async fn keep_metrics_tidy(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Keeps learners' children away from the server's own secrets: files the server creates are
/// private to its user, and its `/proc` entries (environment, memory) are unreadable to
/// processes of the same uid (which children are when the server is not root).
fn protect_server_process() {
    // SAFETY: umask and prctl change only this process's own attributes.
    unsafe {
        libc::umask(0o077);
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    crate::sandbox::become_subreaper();
}

/// Asks the project's Python for its `sys.path` and checks that it imports hyperon.
async fn probe_python(python: &Path) -> Result<Vec<String>, String> {
    const SCRIPT: &str = "import json, sys\nimport hyperon\nprint(json.dumps(sys.path))";
    let output = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::process::Command::new(python)
            .arg("-I")
            .arg("-c")
            .arg(SCRIPT)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{} did not answer within 30 s", python.display()))?
    .map_err(|err| format!("cannot run {}: {err}", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("no error text")
            .to_string();
        return Err(format!(
            "{} cannot import hyperon ({last})",
            python.display()
        ));
    }
    let paths: Vec<String> = serde_json::from_slice(&output.stdout)
        .map_err(|err| format!("unreadable sys.path from {}: {err}", python.display()))?;
    Ok(paths
        .into_iter()
        .filter(|path| !path.is_empty() && PathBuf::from(path).is_absolute())
        .collect())
}
