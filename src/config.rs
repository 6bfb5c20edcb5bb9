//! Service configuration: one struct, every field read from one environment variable (or the
//! matching flag), each with its default and meaning. The README's configuration table mirrors
//! this file; `metta-learner-backend --help` prints it.
//!
//! Nothing else in the crate reads the environment: the rest of the code takes a `Config`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::sandbox::{ChildLimits, ContainmentSettings, Identity};
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

    /// Most MeTTa jobs the worker sends to the engine in one message (1: one at a time).
    /// Queued MeTTa jobs of different sessions that add a new cell share a round trip and a
    /// commit; they still run one after another in queue order, each with its own deadline.
    #[arg(long, env = "MAX_BATCH_JOBS", default_value_t = 32)]
    pub max_batch_jobs: u64,

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

    /// Address-space limit of each Python job, in MiB (the engine has ENGINE_MEMORY_MB).
    #[arg(long, env = "CHILD_MEMORY_MB", default_value_t = 2048)]
    pub child_memory_mb: u64,

    /// CPU seconds a Python job may use (RLIMIT_CPU; a child that forks CPU burners cannot
    /// outlive it). Default: RUN_TIMEOUT_SECS + 2, so a busy loop meets its deadline first.
    /// The long-lived engine is bounded by deadlines and kills instead.
    #[arg(long, env = "CHILD_CPU_SECS")]
    pub child_cpu_secs: Option<u64>,

    /// Address-space limit of the MeTTa engine, in MiB. A run is stopped when the engine's
    /// resident memory passes this less 1 GiB (hyperon's evaluation of an endless loop grows
    /// by about 100 MB/s, so an endless loop needs ~3 GiB to reach a 30 s deadline).
    #[arg(long, env = "ENGINE_MEMORY_MB", default_value_t = 6144)]
    pub engine_memory_mb: u64,

    /// Processes a child's user may have (RLIMIT_NPROC; the kernel ignores it for root).
    #[arg(long, env = "CHILD_MAX_PROCESSES", default_value_t = 256)]
    pub child_max_processes: u64,

    /// Largest file a child may write, in MiB.
    #[arg(long, env = "CHILD_FILE_SIZE_MB", default_value_t = 16)]
    pub child_file_size_mb: u64,

    /// Open files a child may hold.
    #[arg(long, env = "CHILD_OPEN_FILES", default_value_t = 256)]
    pub child_open_files: u64,

    /// When the server runs as root: the uid Python jobs run under.
    #[arg(long, env = "CHILD_UID", default_value_t = 65534)]
    pub child_uid: u32,

    /// When the server runs as root: the uid of every other Python job, so the job running
    /// and the interpreter started ahead for the next one never share a uid.
    #[arg(long, env = "CHILD_ALT_UID", default_value_t = 65532)]
    pub child_alt_uid: u32,

    /// When the server runs as root: the uid the MeTTa engine runs under (apart from Python
    /// jobs, so sweeping one's leftovers never touches the other).
    #[arg(long, env = "ENGINE_UID", default_value_t = 65533)]
    pub engine_uid: u32,

    /// When the server runs as root: the gid of both kinds of children.
    #[arg(long, env = "CHILD_GID", default_value_t = 65534)]
    pub child_gid: u32,

    /// Folder for children's temporary working directories, emptied at start-up (default: a
    /// folder in the system temp dir named after DATABASE_URL, so two servers never share one).
    #[arg(long, env = "SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,

    /// Whether a root server runs children under CHILD_UID / ENGINE_UID.
    #[arg(long, env = "CHILD_DROP_PRIVILEGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub child_drop_privileges: bool,

    /// Whether children get a new, empty network namespace (needs root or CAP_SYS_ADMIN).
    #[arg(long, env = "CHILD_NETWORK_ISOLATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub child_network_isolation: bool,

    /// Seconds a client may take to send a request's headers (slow clients are cut off).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Seconds a client may take to send a request's body.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub body_read_timeout_secs: u64,

    /// Largest request head (request line and headers), in bytes.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most headers one request may carry.
    #[arg(long, env = "MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// Requests that submit work (POST, DELETE) one client may make per minute; 0 turns the
    /// limit off. Beyond it the answer is 429 with Retry-After.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,

    /// How many such requests a client may make at once before the per-minute rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Whether the client is named by the first `X-Forwarded-For` address (set this behind a
    /// proxy such as Railway's, which is the peer of every connection) or by the peer address.
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Bearer token that unlocks the instructor endpoints (`GET /api/v1/sessions`,
    /// `GET /api/v1/sessions/{id}/jobs`) and signs in to the dashboard (`/instructor`); unset
    /// turns both off. Never logged.
    #[arg(long, env = "INSTRUCTOR_TOKEN", hide_env_values = true)]
    pub instructor_token: Option<String>,

    /// How long an instructor stays signed in to the dashboard (`/instructor`), in minutes.
    #[arg(long, env = "INSTRUCTOR_SESSION_MINUTES", default_value_t = 480)]
    pub instructor_session_minutes: u64,

    /// Bearer token `GET /metrics` requires; unset leaves `/metrics` open. Never logged.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Seconds a legacy endpoint (`/run-metta`, …) waits for its job before answering 408.
    #[arg(long, env = "LEGACY_WAIT_SECS", default_value_t = 30)]
    pub legacy_wait_secs: u64,

    /// How log lines are written to stderr: `text` (for people) or `json` (one JSON object per
    /// line, with the request and job spans' fields, for log collectors).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The shape of the service's log lines (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, spans as `request{request_id=…}:` prefixes.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, the current `span`
    /// and the list of enclosing `spans` (with `request_id`, `job_id`, …).
    Json,
}

impl Config {
    /// The grace period given to a running job at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How children are to be contained; `sandbox::plan_containment` checks it against the host.
    pub fn containment_settings(&self) -> ContainmentSettings {
        const MIB: u64 = 1024 * 1024;
        ContainmentSettings {
            limits: ChildLimits {
                memory_bytes: self.child_memory_mb.saturating_mul(MIB),
                // Applied to Python jobs; the long-lived engine is bounded by deadlines instead.
                cpu_secs: Some(self.child_cpu_secs.unwrap_or(self.run_timeout_secs + 2)),
                max_processes: self.child_max_processes,
                file_size_bytes: self.child_file_size_mb.saturating_mul(MIB),
                open_files: self.child_open_files,
            },
            python_identity: Identity {
                uid: self.child_uid,
                gid: self.child_gid,
            },
            python_alternate_identity: Identity {
                uid: self.child_alt_uid,
                gid: self.child_gid,
            },
            engine_identity: Identity {
                uid: self.engine_uid,
                gid: self.child_gid,
            },
            drop_privileges: self.child_drop_privileges,
            isolate_network: self.child_network_isolation,
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
            ("MAX_BATCH_JOBS", self.max_batch_jobs),
            ("CHILD_MEMORY_MB", self.child_memory_mb),
            ("HEADER_READ_TIMEOUT_SECS", self.header_read_timeout_secs),
            ("BODY_READ_TIMEOUT_SECS", self.body_read_timeout_secs),
            ("MAX_HEADERS", self.max_headers as u64),
            ("CHILD_OPEN_FILES", self.child_open_files),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.engine_memory_mb < 2048 {
            return Err(
                "ENGINE_MEMORY_MB must be at least 2048 (the engine reserves 1 GiB)".into(),
            );
        }
        if self.max_header_bytes < 8192 {
            return Err("MAX_HEADER_BYTES must be at least 8192".into());
        }
        if self.rate_limit_per_minute > 0 && self.rate_limit_burst == 0 {
            return Err(
                "RATE_LIMIT_BURST must be at least 1 when RATE_LIMIT_PER_MINUTE is set".into(),
            );
        }
        if [
            self.child_uid,
            self.child_alt_uid,
            self.engine_uid,
            self.child_gid,
        ]
        .contains(&0)
        {
            return Err(
                "CHILD_UID, CHILD_ALT_UID, ENGINE_UID and CHILD_GID must not be 0 (root)".into(),
            );
        }
        if self.child_uid == self.engine_uid
            || self.child_alt_uid == self.engine_uid
            || self.child_uid == self.child_alt_uid
        {
            return Err("CHILD_UID, CHILD_ALT_UID and ENGINE_UID must all differ".into());
        }
        // Python code travels as one command-line argument, which Linux caps at 128 KiB.
        if self.max_code_bytes > 120 * 1024 {
            return Err("MAX_CODE_BYTES may be at most 122880 (120 KiB)".into());
        }
        Ok(())
    }

    /// Resident memory (MiB) past which the engine stops a run: its limit less 1 GiB for its
    /// deep stack and interpreter.
    pub fn engine_memory_budget_mb(&self) -> u64 {
        self.engine_memory_mb.saturating_sub(1024)
    }

    /// The scratch folder: `SCRATCH_DIR`, or one derived from the database URL.
    pub fn scratch_root(&self) -> PathBuf {
        if let Some(dir) = &self.scratch_dir {
            return dir.clone();
        }
        // FNV-1a: stable across builds, unlike the std hasher.
        let hash = self
            .database_url
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        std::env::temp_dir().join(format!("metta-learner-{hash:016x}"))
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

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    /// The README's configuration table must name every setting (and so keep up with this file).
    #[test]
    fn readme_documents_every_environment_variable() {
        let readme = include_str!("../README.md");
        let command = super::Config::augment_args(Command::new("config"));
        let names: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        assert!(names.len() > 20, "found only {names:?}");
        for name in names {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "README's configuration table lacks {name}"
            );
        }
    }

    #[test]
    fn defaults_are_valid() {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: super::Config,
        }
        let parsed = Defaults::try_parse_from(["test"]).expect("defaults parse");
        parsed.config.validate().expect("defaults are valid");
    }
}
