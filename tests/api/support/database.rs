//! The databases under the servers: a fresh PostgreSQL database per server (`psql`), and the
//! jobs a stopped server left in its database, read straight from it.

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::TestServer;

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
    let text = run_psql(
        url,
        sql,
        &["-F", "\u{1f}", "-R", "\u{1e}", "-P", "null=\u{1}"],
    );
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
    run_psql(url, sql, &[])
}

/// psql's unaligned, tuples-only output of `sql` on `url` with `format` options; a panic
/// with psql's error when it fails.
fn run_psql(url: &str, sql: &str, format: &[&str]) -> String {
    let output = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(format)
        .args(["-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

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
