//! Server process control: `TestServer` starts the real binary on port 0 with a fresh folder
//! (its SQLite file, or a fresh PostgreSQL database with `TEST_STORE=postgres`), reads its log,
//! finds its pids, kills it with SIGKILL or SIGTERM and starts it again on the same database.
//! Dropping it kills the server (its children die with it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::database::PostgresDatabase;

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_metta-learner-backend");

/// The project's Python environment (made by scripts/setup.sh).
pub fn project_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// A running server under test.
pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    logs: Arc<Mutex<String>>,
    pub client: reqwest::Client,
    /// The uid and gid the server runs as (`None`: the tests' own).
    run_as: Option<(u32, u32)>,
    /// A program (and its arguments) that starts the binary, given as its last argument.
    launcher: Vec<String>,
    /// The PostgreSQL database of this server (`TEST_STORE=postgres`), dropped with it.
    pub(super) postgres: Option<PostgresDatabase>,
    /// A database this server shares with others (`start_sharing`), not its own.
    shared_database: Option<String>,
}

/// Whether the tests run on PostgreSQL (`TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("TEST_STORE={other}: use sqlite or postgres"),
    }
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// Starts one of several servers on the database `url` (a PostgreSQL database the test
    /// owns), with extra environment variables (e.g. its `HOST_ID`).
    pub async fn start_sharing(url: &str, env: &[(&str, &str)]) -> TestServer {
        let mut server = TestServer::unlaunched(None, Vec::new(), env);
        server.shared_database = Some(url.to_string());
        server.launch();
        server
    }

    /// Starts a server on a copy of the SQLite file `database` (e.g. a fixture made by an
    /// earlier build).
    pub async fn start_on_copy_of(database: &Path, env: &[(&str, &str)]) -> TestServer {
        Self::start_prepared(None, Vec::new(), env, |server| {
            let target = server.database_path();
            std::fs::create_dir_all(target.parent().expect("a folder")).expect("data folder");
            std::fs::copy(database, &target).expect("copy the database");
        })
        .await
    }

    /// Starts a server with extra environment variables (e.g. `("RUN_TIMEOUT_SECS", "2")`).
    pub async fn start_with(env: &[(&str, &str)]) -> TestServer {
        Self::start_as(None, env).await
    }

    /// Starts a server as `user` (uid, gid), which then owns the test's folder, or as the
    /// tests' own user (`None`).
    pub async fn start_as(user: Option<(u32, u32)>, env: &[(&str, &str)]) -> TestServer {
        Self::start_via(user, Vec::new(), env).await
    }

    /// Starts the binary through `launcher` (a command that runs its last argument, such as a
    /// wrapper that sets up the host the server should meet). With `user`, the test's folder
    /// is that user's, and the launcher (started as the tests' user) must switch to it.
    pub async fn start_via(
        user: Option<(u32, u32)>,
        launcher: Vec<String>,
        env: &[(&str, &str)],
    ) -> TestServer {
        Self::start_prepared(user, launcher, env, |_| {}).await
    }

    /// Starts a server after `prepare` has laid out its folder.
    async fn start_prepared(
        user: Option<(u32, u32)>,
        launcher: Vec<String>,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&TestServer),
    ) -> TestServer {
        let mut server = TestServer::unlaunched(user, launcher, env);
        if on_postgres() {
            let tag = server
                .dir
                .path()
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            server.postgres = Some(PostgresDatabase::create(&tag));
        }
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(server.dir.path(), Some(uid), Some(gid))
                .expect("give the test's folder to the server's user");
        }
        prepare(&server);
        server.launch();
        server
    }

    /// A server not started yet, in a fresh folder of its own (on SQLite unless a caller
    /// gives it a database).
    fn unlaunched(
        run_as: Option<(u32, u32)>,
        launcher: Vec<String>,
        env: &[(&str, &str)],
    ) -> TestServer {
        TestServer {
            child: None,
            base: String::new(),
            dir: tempfile::Builder::new()
                .prefix("mlb-test-")
                .tempdir()
                .expect("temp dir"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            logs: Arc::new(Mutex::new(String::new())),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            run_as,
            launcher,
            postgres: None,
            shared_database: None,
        }
    }

    /// The SQLite file of this server.
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("data/test.db")
    }

    fn launch(&mut self) {
        let database_url = match (&self.shared_database, &self.postgres) {
            (Some(url), _) => url.clone(),
            (None, Some(database)) => database.url.clone(),
            (None, None) => format!("sqlite://{}", self.database_path().display()),
        };
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BINARY);
                command
            }
            None => Command::new(BINARY),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", database_url)
            .env("PYTHON", project_python())
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The scratch folder goes in the test's folder (children pass through it to their
        // own), so a server the test kills -9 leaves nothing in the system temp dir.
        if !self.env.iter().any(|(key, _)| key == "SCRATCH_DIR") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("let children pass through the test's folder");
            command.env("SCRATCH_DIR", self.dir.path().join("scratch"));
        }
        // Servers of tests running at once (and of other test runs on the host) get pools of
        // session uids of their own: one server's learner who kills every process of its uid
        // must not reach another server's sessions.
        if !self.env.iter().any(|(key, _)| key == "SESSION_UID_BASE") {
            command.env("SESSION_UID_BASE", session_uid_base().to_string());
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        // A launcher starts as the tests' user and switches to `run_as` itself.
        if let (Some((uid, gid)), true) = (self.run_as, self.launcher.is_empty()) {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().expect("start the server binary");
        let stderr = child.stderr.take().expect("stderr");
        let (address_tx, address_rx) = mpsc::channel();
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    // The address ends at white space or, in a JSON log line, at a quote.
                    let address: String = line[at + "listening on ".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = address_tx.send(address);
                }
                let mut logs = logs.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        self.child = Some(child);
        match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => self.base = address,
            Err(_) => panic!("the server did not start; its log:\n{}", self.logs()),
        }
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The pid of the server's engine child, if one is running.
    pub fn engine_pid(&self) -> Option<u32> {
        let server = self.child.as_ref()?.id().to_string();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Field 4 of /proc/PID/stat (after the parenthesised name) is the parent pid.
            let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            let parent = after_name.split_whitespace().nth(1).unwrap_or("");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let is_engine = cmdline.split(|b| *b == 0).any(|arg| arg == b"engine");
            if parent == server && is_engine {
                return Some(pid);
            }
        }
        None
    }

    /// kill -9 the server (its children die with it through PDEATHSIG).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most `limit`) for the server to exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        send_signal(child.id(), Signal::TERM);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same database (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.launch();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // Then `postgres` (a field) drops the server's database.
    }
}

/// A pool of session uids no other test server of this host uses at the same time: blocks of
/// 100 (MAX_LIVE_SESSIONS + 2 must fit) by test binary process and by server.
fn session_uid_base() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let server = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 500;
    1_000_000 + (std::process::id() % 4_000) * 50_000 + server * 100
}

/// Sends `signal` to the process `pid`; whether it was delivered.
pub fn send_signal(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|pid| kill_process(pid, signal).is_ok())
}
