//! Service configuration: one struct, every field read from one environment variable (or the
//! matching flag), each with its default and meaning. The README's configuration table mirrors
//! this file; `metta-learner-backend --help` prints it.
//!
//! Nothing else in the crate reads the environment: the rest of the code takes a `Config`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::sandbox::ChildLimits;
use crate::store::Durability;

/// Settings of the HTTP server, the queue, the runners and the containment of children.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TCP port to listen on (0 picks a free port; the chosen one is logged).
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// SQLite database URL; the file and its folder are created when missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/metta-learner.db"
    )]
    pub database_url: String,

    /// Longest run of one job, in seconds (a job may ask for less, never more).
    #[arg(long, env = "RUN_TIMEOUT_SECS", default_value_t = 30)]
    pub run_timeout_secs: u64,

    /// Queued jobs before new submissions are refused with 503.
    #[arg(long, env = "MAX_QUEUED_JOBS", default_value_t = 1000)]
    pub max_queued_jobs: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a running job may take to finish after SIGTERM/SIGINT before the server exits.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Comma-separated list of origins allowed by CORS; unset allows any origin.
    #[arg(long, env = "FRONTEND_URL")]
    pub frontend_url: Option<String>,

    /// Python interpreter for Python jobs and the source of the engine's `sys.path`
    /// (default: `.venv/bin/python`, the environment made by `scripts/setup.sh`).
    #[arg(long, env = "PYTHON", default_value = ".venv/bin/python")]
    pub python: PathBuf,

    /// Bytes kept of a job's stdout and of its stderr each; the rest is dropped and the job
    /// says its output was truncated.
    #[arg(long, env = "MAX_OUTPUT_BYTES", default_value_t = 64 * 1024)]
    pub max_output_bytes: usize,

    /// Largest MeTTa or Python source accepted, in bytes.
    #[arg(long, env = "MAX_CODE_BYTES", default_value_t = 64 * 1024)]
    pub max_code_bytes: usize,

    /// Live MeTTa sessions (atomspaces) the engine keeps; the least recently used is evicted
    /// and rebuilt from its history on its next job.
    #[arg(long, env = "MAX_LIVE_SESSIONS", default_value_t = 64)]
    pub max_live_sessions: usize,

    /// Milliseconds the supervisor waits past a MeTTa job's deadline before it kills the engine.
    #[arg(long, env = "ENGINE_KILL_GRACE_MS", default_value_t = 2000)]
    pub engine_kill_grace_ms: u64,

    /// Seconds allowed to replay a session's history into a fresh atomspace.
    #[arg(long, env = "REPLAY_TIMEOUT_SECS", default_value_t = 120)]
    pub replay_timeout_secs: u64,

    /// How hard SQLite keeps each commit: `normal` survives a crash of the process (kill -9),
    /// `full` also survives a power cut, at the price of an fsync per commit.
    #[arg(long, env = "SQLITE_SYNCHRONOUS", value_enum, default_value = "normal")]
    pub sqlite_synchronous: Durability,

    /// Address-space limit of each child (Python job or engine), in MiB.
    #[arg(long, env = "CHILD_MEMORY_MB", default_value_t = 2048)]
    pub child_memory_mb: u64,

    /// Processes a child's user may have (RLIMIT_NPROC; the kernel ignores it for root).
    #[arg(long, env = "CHILD_MAX_PROCESSES", default_value_t = 256)]
    pub child_max_processes: u64,

    /// Largest file a child may write, in MiB.
    #[arg(long, env = "CHILD_FILE_SIZE_MB", default_value_t = 16)]
    pub child_file_size_mb: u64,

    /// Open files a child may hold.
    #[arg(long, env = "CHILD_OPEN_FILES", default_value_t = 256)]
    pub child_open_files: u64,

    /// Bearer token that unlocks the instructor endpoints (`GET /api/v1/sessions`,
    /// `GET /api/v1/sessions/{id}/jobs`); unset turns them off. Never logged.
    #[arg(long, env = "INSTRUCTOR_TOKEN", hide_env_values = true)]
    pub instructor_token: Option<String>,

    /// Seconds a legacy endpoint (`/run-metta`, …) waits for its job before answering 408.
    #[arg(long, env = "LEGACY_WAIT_SECS", default_value_t = 30)]
    pub legacy_wait_secs: u64,
}

impl Config {
    /// The per-job run deadline.
    pub fn run_timeout(&self) -> Duration {
        Duration::from_secs(self.run_timeout_secs)
    }

    /// The grace period given to a running job at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The resource limits of children; CPU time is set per Python job from its deadline.
    pub fn child_limits(&self) -> ChildLimits {
        const MIB: u64 = 1024 * 1024;
        ChildLimits {
            memory_bytes: self.child_memory_mb.saturating_mul(MIB),
            cpu_secs: None,
            max_processes: self.child_max_processes,
            file_size_bytes: self.child_file_size_mb.saturating_mul(MIB),
            open_files: self.child_open_files,
        }
    }

    /// Checks the values no type can check; the message names the variable to fix.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("RUN_TIMEOUT_SECS", self.run_timeout_secs),
            ("MAX_QUEUED_JOBS", self.max_queued_jobs),
            ("MAX_BODY_BYTES", self.max_body_bytes as u64),
            ("MAX_OUTPUT_BYTES", self.max_output_bytes as u64),
            ("MAX_CODE_BYTES", self.max_code_bytes as u64),
            ("MAX_LIVE_SESSIONS", self.max_live_sessions as u64),
            ("REPLAY_TIMEOUT_SECS", self.replay_timeout_secs),
            ("CHILD_MEMORY_MB", self.child_memory_mb),
            ("CHILD_OPEN_FILES", self.child_open_files),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        // Python code travels as one command-line argument, which Linux caps at 128 KiB.
        if self.max_code_bytes > 120 * 1024 {
            return Err("MAX_CODE_BYTES may be at most 122880 (120 KiB)".into());
        }
        Ok(())
    }

    /// Allowed CORS origins, or `None` for any origin.
    pub fn allowed_origins(&self) -> Option<Vec<String>> {
        let list = self.frontend_url.as_deref()?;
        let origins: Vec<String> = list
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_string())
            .filter(|origin| !origin.is_empty())
            .collect();
        (!origins.is_empty()).then_some(origins)
    }
}
