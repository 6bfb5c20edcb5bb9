//! Assembles the service: claims the database and a scratch folder (`instance`; a second
//! server on the same database stops there), opens the store (recovering jobs a crash
//! interrupted), probes the Python environment, plans how children are contained (failing
//! closed when a wall cannot be built), binds the listener, and runs the HTTP server and the
//! one worker until the shutdown token fires. Tests and `main` both go through `Application`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{engine_open_files, EngineSettings, EngineSupervisor};
use crate::http::{router, serve, AppState, ConnectionLimits};
use crate::instance::{
    database_file, lock_database, make_database_private, DatabaseLock, ScratchFolder,
};
use crate::job_signals::JobSignals;
use crate::python_runner::PythonRunner;
use crate::queue::JobQueue;
use crate::sandbox::plan::Probe;
use crate::sandbox::{plan_containment, ChildLimits, Containment, ContainmentPlan};
use crate::store::{PgStore, Store};
use crate::worker::Worker;

/// The name of the server secret that derives playground clients' own sessions.
const CLIENT_SESSION_SECRET: &str = "client-session-key";

/// 32 random bytes (two random UUIDs' 244 random bits, from the OS's generator).
fn fresh_secret() -> Vec<u8> {
    [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|id| id.into_bytes())
        .collect()
}

/// How long the probe of the Python environment may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The service, built and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    config: Arc<Config>,
    store: Store,
    signals: Arc<JobSignals>,
    worker: Worker,
    /// Why learners' code does not run here (reported by `/health`), if it does not.
    containment_refusal: Option<String>,
    /// Held until the process exits: no second server opens this database meanwhile.
    database_lock: DatabaseLock,
    /// Removed at a clean stop, once the worker (and so every child) is gone.
    scratch: ScratchFolder,
}

impl Application {
    /// Opens the database, recovers interrupted jobs, probes Python and binds the port.
    pub async fn build(mut config: Config) -> anyhow::Result<Application> {
        config.validate().map_err(anyhow::Error::msg)?;
        config.python = std::path::absolute(&config.python)
            .with_context(|| format!("PYTHON path {} is not usable", config.python.display()))?;

        protect_server_process();
        // Claimed before the store is opened: a second server on this database stops here,
        // having recovered, cleaned and changed nothing.
        // On PostgreSQL the database is shared by design; what is claimed on this machine is
        // this server's place in it (one server per port), anchored at a local file.
        let database = if config.is_postgres() {
            std::path::PathBuf::from(format!("data/postgres-host-{}", config.port))
        } else {
            database_file(&config.database_url)?
        };
        let database_lock = lock_database(&database)?;
        let scratch = ScratchFolder::claim(
            &config.scratch_root(),
            &database,
            config.scratch_dir.is_none(),
        )?;
        let store = if config.is_postgres() {
            let host = config.host_id();
            tracing::info!(host = %host, lease_secs = config.host_lease_secs, "on PostgreSQL");
            Store::Postgres(
                PgStore::open(
                    &config.database_url,
                    host,
                    Duration::from_secs(config.host_lease_secs),
                    Duration::from_millis(config.session_affinity_ms),
                )
                .await
                .context("cannot open the PostgreSQL database (DATABASE_URL)")?,
            )
        } else {
            Store::open(&database, config.sqlite_synchronous)
                .await
                .with_context(|| format!("cannot open the database {}", config.database_url))?
        };
        let recovery = store.recover_interrupted_jobs().await?;
        if recovery.requeued > 0 || recovery.failed > 0 {
            tracing::warn!(
                requeued = recovery.requeued,
                failed = recovery.failed,
                "recovered jobs interrupted by the previous stop"
            );
        }

        let sys_path = match probe_python(&config.python).await {
            Ok(path) => Some(path),
            Err(problem) => {
                tracing::warn!(
                    "MeTTa engine unavailable: {problem}. Run scripts/setup.sh to create .venv with hyperon, or set PYTHON."
                );
                None
            }
        };
        let executable = std::env::current_exe().context("cannot find the server's executable")?;
        make_database_private(&database);
        let plan = plan_children(
            &config,
            &database,
            &scratch,
            &executable,
            sys_path.as_deref(),
        );
        let sys_path = sys_path.unwrap_or_default();
        let engine = EngineSupervisor::new(EngineSettings {
            executable,
            sys_path,
            max_live_sessions: config.max_live_sessions,
            memory_budget_mb: config.engine_memory_budget_mb(),
            kill_grace: Duration::from_millis(config.engine_kill_grace_ms),
            replay_timeout: Duration::from_secs(config.replay_timeout_secs),
            max_output_bytes: config.max_output_bytes,
            // A root server's engine stays root (it runs no learner's code) so that it can
            // give each session's process a uid of its own from the pool.
            session_uid_base: plan.engine.identity.map(|_| config.session_uid_base),
            session_gid: plan.engine.identity.map(|identity| identity.gid),
            session_open_files: plan.engine.limits.open_files,
            containment: Containment {
                limits: ChildLimits {
                    memory_bytes: config.engine_memory_mb.saturating_mul(1024 * 1024),
                    cpu_secs: None,
                    open_files: engine_open_files(
                        config.max_live_sessions,
                        plan.engine.limits.open_files,
                    ),
                    ..plan.engine.limits
                },
                identity: None,
                ..plan.engine
            },
            refusal: plan.refusal.clone(),
            scratch: scratch.path().to_path_buf(),
        });
        let python = PythonRunner::new(
            config.python.clone(),
            plan.python,
            plan.python_alternate,
            scratch.path().to_path_buf(),
            config.max_output_bytes,
            plan.refusal.clone(),
        );

        let address = listen_address(&config.host, config.port).await?;
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
            containment_refusal: plan.refusal,
            database_lock,
            scratch,
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
            containment_refusal,
            database_lock,
            scratch,
        } = self;
        let client_session_key: Arc<[u8]> = store
            .server_secret(CLIENT_SESSION_SECRET, &fresh_secret())
            .await
            .context("cannot read the server's secret for client sessions")?
            .into();
        let queue = JobQueue::new(
            store.clone(),
            signals.clone(),
            config.max_queued_jobs,
            shutdown.clone(),
            config.shutdown_grace(),
        );
        let metrics = crate::service_metrics::install();
        if metrics.is_none() {
            tracing::warn!("metrics unavailable: another recorder is installed in this process");
        }
        if let Some(handle) = metrics.clone() {
            tokio::spawn(keep_metrics_tidy(handle, shutdown.clone()));
        }
        let app = router(AppState::new(
            queue,
            config.clone(),
            metrics,
            client_session_key,
            containment_refusal.map(Arc::from),
        ));
        // On PostgreSQL: heart-beats, rescue of dead hosts' jobs, and the LISTEN that wakes
        // this host's worker and long-waits for what other hosts do.
        let host_tasks = match &store {
            Store::Postgres(pg) => Some(pg.start_host_tasks(signals.clone(), shutdown.clone())),
            Store::Sqlite(_) => None,
        };
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
        drop(host_tasks);
        store.close().await;
        scratch.remove();
        tracing::info!(lock = %database_lock.path().display(), "shut down cleanly");
        drop(database_lock);
        Ok(())
    }
}

/// Tries the walls on throw-away children running what the real ones run (hyperon's import
/// only where the server itself imports it: a `PYTHON` without hyperon is not the walls'
/// fault), and says what it found: a warning per wall switched off, an error when learners'
/// code will not run at all.
fn plan_children(
    config: &Config,
    database: &Path,
    scratch: &ScratchFolder,
    executable: &Path,
    sys_path: Option<&[String]>,
) -> ContainmentPlan {
    let python_probe: &[&str] = if sys_path.is_some() {
        &["-I", "-c", "import hyperon"]
    } else {
        &["-I", "-c", "pass"]
    };
    let keep_visible: Vec<&Path> = [config.python.as_path(), executable]
        .into_iter()
        .chain(sys_path.unwrap_or_default().iter().map(Path::new))
        .collect();
    let plan = plan_containment(
        &config.containment_settings(database, scratch.path()),
        &[
            Probe {
                setting: "PYTHON",
                program: &config.python,
                args: python_probe,
            },
            Probe {
                setting: "the server's executable",
                program: executable,
                args: &["--version"],
            },
        ],
        &keep_visible,
    );
    for warning in &plan.warnings {
        tracing::warn!("containment: {warning}");
    }
    if let Some(reason) = &plan.refusal {
        tracing::error!("containment: learners' code will NOT run on this server: {reason}");
    }
    plan
}

/// The address `HOST` names: an address as it is, a name (`localhost`) resolved, its first
/// address taken.
async fn listen_address(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addresses = tokio::net::lookup_host((bare, port))
        .await
        .with_context(|| {
            format!("HOST={host} is neither an address nor a name this host resolves")
        })?;
    addresses
        .next()
        .with_context(|| format!("HOST={host} resolves to no address"))
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

/// Asks the project's Python for its `sys.path` and checks that it imports hyperon. Also timed
/// by the benchmark (`measurement`), as part of start-up.
pub async fn probe_python(python: &Path) -> Result<Vec<String>, String> {
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
