//! Service configuration: one struct, every field read from one environment variable (or the
//! matching flag), each with its default and meaning. The README's configuration table mirrors
//! this file; `metta-learner-backend --help` prints it.
//!
//! Nothing else in the crate reads the environment: the rest of the code takes a `Config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::sandbox::{ChildLimits, ContainmentSettings, Identity};
use crate::store::Durability;

/// Whose session a playground request that names none uses (`LEGACY_SESSIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LegacySessions {
    /// One session per client, derived from its address and User-Agent with a server secret.
    PerClient,
    /// The original service's single session `default`, shared by every client.
    Shared,
}

/// Longest `RUN_TIMEOUT_SECS` (an hour): longer runs belong to another kind of service.
pub const MAX_RUN_TIMEOUT_SECS: u64 = 3600;
/// Smallest address-space limit of a Python job that an interpreter importing hyperon
/// starts under (it needs about 64 MiB).
pub const MIN_CHILD_MEMORY_MB: u64 = 128;
/// Largest memory setting, in MiB (1 TiB): larger values overflow nothing but mean nothing.
const MAX_MEMORY_MB: u64 = 1024 * 1024;

/// One numeric setting, its value and the range it must fall in.
struct Range {
    name: &'static str,
    value: u64,
    min: u64,
    max: u64,
    /// Why the minimum is what it is, when that is not obvious.
    reason: Option<&'static str>,
}

impl Range {
    fn new(name: &'static str, value: u64, min: u64, max: u64) -> Self {
        Range {
            name,
            value,
            min,
            max,
            reason: None,
        }
    }

    fn because(self, reason: &'static str) -> Self {
        Range {
            reason: Some(reason),
            ..self
        }
    }

    fn check(&self) -> Result<(), String> {
        if (self.min..=self.max).contains(&self.value) {
            return Ok(());
        }
        let why = self
            .reason
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        Err(format!(
            "{}={} is out of range: it must be from {} to {}{why}",
            self.name, self.value, self.min, self.max
        ))
    }
}

/// Settings of the HTTP server, the queue, the runners and the containment of children.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TCP port to listen on (0 picks a free port; the chosen one is logged).
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    /// Address or host name to bind (`0.0.0.0`, `::`, `127.0.0.1`, `localhost`, …); a name
    /// is resolved at start-up and the first address it has is bound.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// The database: `sqlite://PATH` (the file and its folder are created when missing) or
    /// `postgres://…` (several servers may share it; see HOST_ID and HOST_LEASE_SECS).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/metta-learner.db"
    )]
    pub database_url: String,

    /// On PostgreSQL: this server's name among the servers sharing the database (default
    /// `<hostname>:<PORT>`). Keep it across restarts: a server that starts under the name of
    /// one that died re-queues that one's running jobs at once instead of after the lease.
    #[arg(long, env = "HOST_ID")]
    pub host_id: Option<String>,

    /// On PostgreSQL: seconds after its last heart-beat (every third of this) that a server
    /// counts as dead, and another server re-queues the jobs it was running.
    #[arg(long, env = "HOST_LEASE_SECS", default_value_t = 10)]
    pub host_lease_secs: u64,

    /// On PostgreSQL: milliseconds a session's job may wait in the queue for the server that
    /// ran the session's last job (which has the session live) before another server may take
    /// it (and rebuild the session by replaying its whole history): longer than a busy server
    /// takes to come round to a session again.
    #[arg(long, env = "SESSION_AFFINITY_MS", default_value_t = 5000)]
    pub session_affinity_ms: u64,

    /// Longest run of one job, in seconds (a job may ask for less, never more).
    #[arg(long, env = "RUN_TIMEOUT_SECS", default_value_t = 30)]
    pub run_timeout_secs: u64,

    /// Most MeTTa jobs the worker sends to the engine in one message (1: one at a time).
    /// Queued MeTTa jobs of different sessions that add a new cell share a round trip and a
    /// commit; they still run one after another in queue order, each with its own deadline.
    #[arg(long, env = "MAX_BATCH_JOBS", default_value_t = 32)]
    pub max_batch_jobs: u64,

    /// Threads of the server's async runtime (HTTP, the worker's bookkeeping). The heavy work
    /// runs elsewhere (SQLite's and the engine's own threads, Python processes), so one is
    /// fastest on small machines: measured on 2 cores, a second thread cost more in hand-offs
    /// than it gave (docs/PERFORMANCE.md).
    #[arg(long, env = "SERVER_THREADS", default_value_t = 1)]
    pub server_threads: u64,

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

    /// When the server runs as root: the first uid of the pool each live MeTTa session's
    /// process runs under (MAX_LIVE_SESSIONS + 2 uids from here, one per live session, the
    /// one started ahead and one being ended), so no session can signal, trace or read
    /// another. The pool must not hold CHILD_UID, CHILD_ALT_UID or ENGINE_UID.
    #[arg(long, env = "SESSION_UID_BASE", default_value_t = 200000)]
    pub session_uid_base: u32,

    /// When the server runs as root: the gid of both kinds of children.
    #[arg(long, env = "CHILD_GID", default_value_t = 65534)]
    pub child_gid: u32,

    /// Folder for children's temporary working directories (default: a folder in the system
    /// temp dir named after DATABASE_URL). The server creates it (its parent must exist) or
    /// takes it empty, marks it as its own, empties it at start-up and removes it at a clean
    /// stop; one that holds the database or files the server did not make is refused.
    #[arg(long, env = "SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,

    /// Whether children are kept from the server's user: a root server runs them under
    /// CHILD_UID / ENGINE_UID, a normal user's in user, mount and PID namespaces. `false` is
    /// the explicit opt-out; when the wall cannot be built otherwise, no learner's code runs.
    #[arg(long, env = "CHILD_DROP_PRIVILEGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub child_drop_privileges: bool,

    /// Whether children get a new, empty network namespace (root with CAP_SYS_ADMIN, or a
    /// normal user where unprivileged user namespaces are allowed). `false` is the explicit
    /// opt-out; when the host refuses it otherwise, no learner's code runs.
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

    /// The session of a playground request that names none (no `sessionId`, no
    /// `X-Session-Id`): `per-client`, one of its own per client (address and User-Agent), or
    /// `shared`, the original service's one session `default` for everyone.
    #[arg(long, env = "LEGACY_SESSIONS", value_enum, default_value_t = LegacySessions::PerClient)]
    pub legacy_sessions: LegacySessions,
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
    pub fn containment_settings(&self, database: &Path, scratch: &Path) -> ContainmentSettings {
        const MIB: u64 = 1024 * 1024;
        ContainmentSettings {
            limits: ChildLimits {
                memory_bytes: self.child_memory_mb.saturating_mul(MIB),
                // Applied to Python jobs; the long-lived engine is bounded by deadlines instead.
                cpu_secs: Some(
                    self.child_cpu_secs
                        .unwrap_or(self.run_timeout_secs.saturating_add(2)),
                ),
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
            database: database.to_path_buf(),
            scratch: scratch.to_path_buf(),
        }
    }

    /// Checks every value against its documented range (the README's table) and the values
    /// that parse but cannot work; the message names the variable to fix and its range.
    pub fn validate(&self) -> Result<(), String> {
        for setting in self.ranges() {
            setting.check()?;
        }
        if self.rate_limit_per_minute > 0 && self.rate_limit_burst == 0 {
            return Err(
                "RATE_LIMIT_BURST must be at least 1 when RATE_LIMIT_PER_MINUTE is set".into(),
            );
        }
        let uids = [
            ("CHILD_UID", self.child_uid),
            ("CHILD_ALT_UID", self.child_alt_uid),
            ("ENGINE_UID", self.engine_uid),
            ("CHILD_GID", self.child_gid),
        ];
        for (name, id) in uids {
            if id == 0 || id == u32::MAX {
                return Err(format!(
                    "{name}={id} is not allowed: it must be an unprivileged id from 1 to 4294967294 (0 is root, 4294967295 means \"no id\")"
                ));
            }
        }
        if self.child_uid == self.engine_uid
            || self.child_alt_uid == self.engine_uid
            || self.child_uid == self.child_alt_uid
        {
            return Err("CHILD_UID, CHILD_ALT_UID and ENGINE_UID must all differ".into());
        }
        let session_uids = u64::from(self.session_uid_base)
            ..u64::from(self.session_uid_base) + self.max_live_sessions as u64 + 2;
        if self.session_uid_base == 0 || session_uids.end > u64::from(u32::MAX) {
            return Err(format!(
                "SESSION_UID_BASE={} is not allowed: the pool of MAX_LIVE_SESSIONS + 2 uids from it must lie within 1 to 4294967294",
                self.session_uid_base
            ));
        }
        for (name, id) in [
            ("CHILD_UID", self.child_uid),
            ("CHILD_ALT_UID", self.child_alt_uid),
            ("ENGINE_UID", self.engine_uid),
        ] {
            if session_uids.contains(&u64::from(id)) {
                return Err(format!(
                    "{name}={id} lies in the session uid pool SESSION_UID_BASE={} .. +MAX_LIVE_SESSIONS+2: move one of them",
                    self.session_uid_base
                ));
            }
        }
        if self.host.trim().is_empty() || self.host.trim() != self.host {
            return Err(format!(
                "HOST={:?} must be an address or a host name without surrounding spaces",
                self.host
            ));
        }
        for (name, token) in [
            ("INSTRUCTOR_TOKEN", &self.instructor_token),
            ("METRICS_TOKEN", &self.metrics_token),
        ] {
            let Some(token) = token else { continue };
            if token.is_empty() {
                return Err(format!(
                    "{name} is set but empty; unset it to turn off what it guards"
                ));
            }
            if token.trim() != token {
                return Err(format!(
                    "{name} starts or ends with whitespace, which a client would have to send too; remove it (the value is not shown)"
                ));
            }
        }
        if let Some(list) = &self.frontend_url {
            for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                    return Err(format!(
                        "FRONTEND_URL: {origin:?} is not an origin (write http://host or https://host, comma-separated)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every numeric setting with its range, in the README's order.
    fn ranges(&self) -> Vec<Range> {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * 1024;
        let size = |value: usize| value as u64;
        vec![
            Range::new(
                "RUN_TIMEOUT_SECS",
                self.run_timeout_secs,
                1,
                MAX_RUN_TIMEOUT_SECS,
            ),
            Range::new("MAX_BATCH_JOBS", self.max_batch_jobs, 1, 1024),
            Range::new("SERVER_THREADS", self.server_threads, 1, 256),
            Range::new("HOST_LEASE_SECS", self.host_lease_secs, 1, 3600),
            Range::new("SESSION_AFFINITY_MS", self.session_affinity_ms, 0, 600_000),
            Range::new("MAX_QUEUED_JOBS", self.max_queued_jobs, 1, 10_000_000),
            Range::new("MAX_BODY_BYTES", size(self.max_body_bytes), KIB, 64 * MIB),
            Range::new("SHUTDOWN_GRACE_SECS", self.shutdown_grace_secs, 0, 3600),
            Range::new("MAX_OUTPUT_BYTES", size(self.max_output_bytes), 1, 64 * MIB),
            // Code reaches Python over a pipe (fd 3) and the engine in its request, so no
            // argument-size cap applies; the ceiling stays where it was, under MAX_BODY_BYTES's
            // default, so the documented range (README) does not change.
            Range::new("MAX_CODE_BYTES", size(self.max_code_bytes), 1, 120 * KIB),
            Range::new(
                "MAX_LIVE_SESSIONS",
                size(self.max_live_sessions),
                1,
                100_000,
            ),
            Range::new(
                "ENGINE_KILL_GRACE_MS",
                self.engine_kill_grace_ms,
                0,
                600_000,
            ),
            Range::new("REPLAY_TIMEOUT_SECS", self.replay_timeout_secs, 1, 3600),
            Range::new(
                "CHILD_MEMORY_MB",
                self.child_memory_mb,
                MIN_CHILD_MEMORY_MB,
                MAX_MEMORY_MB,
            )
            .because("Python with hyperon needs about 64 MiB of address space to start"),
            Range::new(
                "CHILD_CPU_SECS",
                self.child_cpu_secs.unwrap_or(1),
                1,
                MAX_RUN_TIMEOUT_SECS + 2,
            ),
            Range::new(
                "ENGINE_MEMORY_MB",
                self.engine_memory_mb,
                2048,
                MAX_MEMORY_MB,
            )
            .because("the engine reserves 1 GiB for its stack and interpreter"),
            Range::new(
                "CHILD_MAX_PROCESSES",
                self.child_max_processes,
                8,
                1_000_000,
            )
            .because("the interpreter and its threads count as processes"),
            Range::new(
                "CHILD_FILE_SIZE_MB",
                self.child_file_size_mb,
                1,
                MAX_MEMORY_MB,
            ),
            Range::new("CHILD_OPEN_FILES", self.child_open_files, 16, 1_048_576)
                .because("the interpreter opens about a dozen files to start"),
            Range::new(
                "HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
                1,
                3600,
            ),
            Range::new(
                "BODY_READ_TIMEOUT_SECS",
                self.body_read_timeout_secs,
                1,
                3600,
            ),
            Range::new(
                "MAX_HEADER_BYTES",
                size(self.max_header_bytes),
                8 * KIB,
                MIB,
            ),
            Range::new("MAX_HEADERS", size(self.max_headers), 8, 1024),
            Range::new(
                "RATE_LIMIT_PER_MINUTE",
                u64::from(self.rate_limit_per_minute),
                0,
                1_000_000,
            ),
            Range::new(
                "RATE_LIMIT_BURST",
                u64::from(self.rate_limit_burst),
                0,
                1_000_000,
            ),
            Range::new("LEGACY_WAIT_SECS", self.legacy_wait_secs, 1, 3600)
                .because("0 would answer every playground request 408 at once"),
            Range::new(
                "INSTRUCTOR_SESSION_MINUTES",
                self.instructor_session_minutes,
                1,
                7 * 24 * 60,
            ),
        ]
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
        // FNV-1a: stable across builds, unlike the std hasher. Servers on one PostgreSQL
        // share the URL, so on PostgreSQL the port and host id tell theirs apart.
        let key = if self.is_postgres() {
            format!("{} {} {}", self.database_url, self.port, self.host_id())
        } else {
            self.database_url.clone()
        };
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        std::env::temp_dir().join(format!("metta-learner-{hash:016x}"))
    }

    /// Whether DATABASE_URL names a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
    }

    /// This server's name among those sharing a PostgreSQL database (HOST_ID).
    pub fn host_id(&self) -> String {
        if let Some(id) = &self.host_id {
            return id.clone();
        }
        let mut name = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
        // or truncates, and the name is read up to the first NUL.
        let got = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let host = if got == 0 {
            String::from_utf8_lossy(&name[..end]).into_owned()
        } else {
            "localhost".to_string()
        };
        format!("{host}:{}", self.port)
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
mod tests;
