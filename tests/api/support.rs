//! The test harness: `TestServer` runs the real binary with a fresh database folder and gives
//! an HTTP client and helpers; it can kill -9, SIGTERM and restart the server on the same
//! database. Dropping it kills the server (its children die with it).
//!
//! The store comes from `TEST_STORE`: `sqlite` (the default: a file in the test's folder) or
//! `postgres` (a fresh database per server on the PostgreSQL that `TEST_PG_ADMIN_URL` names,
//! made with `psql` and dropped with the server; scripts/test.sh starts that PostgreSQL and
//! runs the suites about the store once per store).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

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
    postgres: Option<PostgresDatabase>,
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

/// A fresh database on the tests' PostgreSQL server, dropped (with its connections) on drop.
pub struct PostgresDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PostgresDatabase {
    /// Creates a database named after `tag` (made unique) on `TEST_PG_ADMIN_URL`.
    pub fn create(tag: &str) -> PostgresDatabase {
        let admin = std::env::var("TEST_PG_ADMIN_URL")
            .expect("TEST_STORE=postgres needs TEST_PG_ADMIN_URL (scripts/test.sh sets it)");
        let unique: String = format!("{tag}_{}", uuid_like())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("t_{unique}");
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin
            .rsplit_once('/')
            .expect("TEST_PG_ADMIN_URL ends in /DATABASE");
        PostgresDatabase {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }

    /// Runs `sql` on this database; its output (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.admin, "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn uuid_like() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{}_{nanos:x}", std::process::id())
}

/// The rows `sql` reads on `url` (psql), each a list of its fields (`None` for NULL); fields
/// may hold any text but the separators (ASCII unit and record separators, and SOH for NULL).
pub fn psql_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "\u{1f}",
            "-R",
        ])
        .arg("\u{1e}")
        .args(["-P", "null=\u{1}", "-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim_end_matches('\n')
        .split('\u{1e}')
        .filter(|row| !row.is_empty())
        .map(|row| {
            row.split('\u{1f}')
                .map(|field| (field != "\u{1}").then(|| field.to_string()))
                .collect()
        })
        .collect()
}

/// Runs `sql` with psql on `url`; its output, or a panic with psql's error.
pub fn psql(url: &str, sql: &str) -> String {
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
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// Starts one of several servers on the database `url` (a PostgreSQL database the test
    /// owns), with extra environment variables (e.g. its `HOST_ID`).
    pub async fn start_sharing(url: &str, env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("mlb-test-")
            .tempdir()
            .expect("temp dir");
        let mut server = TestServer {
            child: None,
            base: String::new(),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            logs: Arc::new(Mutex::new(String::new())),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            run_as: None,
            launcher: Vec::new(),
            postgres: None,
            shared_database: Some(url.to_string()),
        };
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
        let dir = tempfile::Builder::new()
            .prefix("mlb-test-")
            .tempdir()
            .expect("temp dir");
        let mut server = TestServer {
            child: None,
            base: String::new(),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            logs: Arc::new(Mutex::new(String::new())),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            run_as: user,
            launcher,
            postgres: None,
            shared_database: None,
        };
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
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
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

    // ----- HTTP helpers -------------------------------------------------------------------

    /// POST a JSON body; returns status and parsed JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        read(response).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        read(response).await
    }

    /// Submits a job (v1) and returns the answer's JSON; panics unless 200 or 202.
    pub async fn submit(&self, body: Value) -> Value {
        let (status, job) = self.post("/api/v1/jobs", body).await;
        assert!(
            status == 200 || status == 202,
            "submit answered {status}: {job}"
        );
        job
    }

    /// Submits a job and waits (up to 60 s) for its final state.
    pub async fn run(&self, body: Value) -> Value {
        let job = self.submit(body).await;
        self.wait_final(job["id"].as_str().expect("id")).await
    }

    /// Runs MeTTa code in a session and returns the final job.
    pub async fn metta(&self, session: &str, code: &str) -> Value {
        self.run(json!({"language": "metta", "code": code, "sessionId": session}))
            .await
    }

    /// Waits for a job's final state with `?wait=` (up to 60 s per call, 3 calls).
    pub async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..3 {
            let (status, job) = self.get(&format!("/api/v1/jobs/{id}?wait=60")).await;
            assert_eq!(status, 200, "{job}");
            if is_final(&job) {
                return job;
            }
        }
        panic!("job {id} did not finish");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // Then `postgres` (a field) drops the server's database.
    }
}

/// True for a job JSON in a final state.
pub fn is_final(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "timed_out" | "cancelled")
    )
}

/// Status and JSON body of a response (panics if the body is not JSON: every answer must be).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    (status, value)
}

/// Runs MeTTa code directly in hyperon (`metta-py`'s way) with the project's Python, outside
/// the service: the reference the service's results must equal.
pub fn direct_hyperon_run(program: &str) -> String {
    let script = r#"
import sys, hyperon
program = sys.stdin.read()
metta = hyperon.MeTTa(env_builder=hyperon.Environment.custom_env(working_dir='.', config_dir=''))
for result in metta.run(program):
    print(result)
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(project_python())
        .arg("-I")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(program.as_bytes()).expect("write program");
    }
    let output = child.wait_with_output().expect("python output");
    assert!(
        output.status.success(),
        "direct hyperon run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ----- answers ------------------------------------------------------------------------------

/// The answer to a request: status, headers and JSON body (panics if the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `Retry-After` header in whole seconds, if there is one and it is a number.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
    }
}

/// Reads a response into an `Answer` (panics if the body is not JSON: every answer must be).
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// POSTs raw bytes as a JSON body (`Content-Type: application/json`), with optional extra
/// headers.
pub async fn post_raw(
    server: &TestServer,
    path: &str,
    body: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = server
        .client
        .post(server.url(path))
        .header("Content-Type", "application/json")
        .body(body.as_ref().to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("POST")).await
}

/// POSTs a JSON value as the body.
pub async fn post_json(server: &TestServer, path: &str, body: &Value) -> Answer {
    post_raw(server, path, body.to_string(), &[]).await
}

// ----- jobs ---------------------------------------------------------------------------------

/// A v1 job body running `code` in Python.
pub fn python(code: &str) -> Value {
    json!({"language": "python", "code": code})
}

/// The `id` of a job JSON (panics if it has none).
pub fn id_of(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("job has no id: {job}"))
        .to_string()
}

/// Polls a job (without `?wait=`, which only waits for a final state) until it is `running`,
/// and returns it; panics if it leaves `queued` for anything else or takes over 30 s.
pub async fn wait_until_running(server: &TestServer, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = server.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "running" {
            return job;
        }
        assert!(
            job["status"] == "queued",
            "job {id} should be queued until it runs: {job}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job {id} did not start running within 30 s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job counts of `GET /api/v1/queue` (panics unless it answers 200).
pub async fn queue_counts(server: &TestServer) -> Value {
    let (status, counts) = server.get("/api/v1/queue").await;
    assert_eq!(status, 200, "{counts}");
    counts
}

/// The number of stored jobs in every state, from `GET /api/v1/queue`.
pub async fn stored_job_count(server: &TestServer) -> i64 {
    let counts = queue_counts(server).await;
    [
        "queued",
        "running",
        "succeeded",
        "failed",
        "timedOut",
        "cancelled",
    ]
    .iter()
    .map(|name| {
        counts[*name]
            .as_i64()
            .unwrap_or_else(|| panic!("queue counts lack {name}: {counts}"))
    })
    .sum()
}

// ----- the stopped server's database --------------------------------------------------------

/// A job row as the stopped server left it in its database.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub seq: i64,
    pub id: String,
    pub language: Option<String>,
    pub session_id: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub result: Option<String>,
    pub error: Option<String>,
    pub key: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl StoredJob {
    /// One line naming the job, its place, status, attempts, times and error.
    pub fn describe(&self) -> String {
        format!(
            "job {} (seq {}, {}, attempts {}, started {}, finished {}, error {:?})",
            self.id,
            self.seq,
            self.status,
            self.attempts,
            self.started_at.as_deref().unwrap_or("-"),
            self.finished_at.as_deref().unwrap_or("-"),
            self.error.as_deref().unwrap_or("")
        )
    }
}

/// Every job of the stopped server, in `seq` order, read straight from its database (its
/// SQLite file, or its PostgreSQL database with psql).
pub async fn stored_jobs(server: &TestServer) -> Vec<StoredJob> {
    if let Some(database) = &server.postgres {
        return psql_rows(
            &database.url,
            "SELECT seq, id, language, session_id, status, attempts, result, error, \
                    idempotency_key, started_at, finished_at FROM jobs ORDER BY seq",
        )
        .into_iter()
        .map(|row| {
            let text = |at: usize| row[at].clone();
            let number = |at: usize| {
                row[at]
                    .as_deref()
                    .and_then(|value| value.parse::<i64>().ok())
                    .expect("a number")
            };
            StoredJob {
                seq: number(0),
                id: text(1).expect("id"),
                language: text(2),
                session_id: text(3),
                status: text(4).expect("status"),
                attempts: number(5),
                result: text(6),
                error: text(7),
                key: text(8),
                started_at: text(9),
                finished_at: text(10),
            }
        })
        .collect();
    }
    use sqlx::{ConnectOptions, Connection};
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(server.database_path())
        .read_only(true)
        .connect()
        .await
        .expect("open the stopped server's database");
    let jobs = sqlx::query_as!(
        StoredJob,
        r#"SELECT seq AS "seq!", id AS "id!", language, session_id, status AS "status!",
                  attempts AS "attempts!", result, error, idempotency_key AS key, started_at,
                  finished_at
           FROM jobs ORDER BY seq"#
    )
    .fetch_all(&mut connection)
    .await
    .expect("read the jobs");
    connection.close().await.expect("close the database");
    jobs
}

// ----- MeTTa --------------------------------------------------------------------------------

/// A fresh `code_<ms>_<rand>` id: the frontend makes one per click and never reuses it.
pub fn frontend_code_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("code_{ms}_{}", &random[..9])
}

/// How many `!` expressions `code` has (a `!` directly before `(`, at the start or after
/// white space; `println!` and `bind!` do not count).
pub fn bang_count(code: &str) -> usize {
    let bytes = code.as_bytes();
    (0..bytes.len())
        .filter(|&at| {
            bytes[at] == b'!'
                && bytes.get(at + 1) == Some(&b'(')
                && (at == 0 || bytes[at - 1].is_ascii_whitespace())
        })
        .count()
}

/// The last `count` lines of `output`, each ending with a newline.
pub fn last_lines(output: &str, count: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}

// ----- randomness ---------------------------------------------------------------------------

/// A small deterministic pseudo-random generator (SplitMix64), no crate needed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 for a bound of 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// A pool of session uids no other test server of this host uses at the same time: blocks of
/// 100 (MAX_LIVE_SESSIONS + 2 must fit) by test binary process and by server.
fn session_uid_base() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let server = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 500;
    1_000_000 + (std::process::id() % 4_000) * 50_000 + server * 100
}
