//! Several servers on one PostgreSQL draining one queue, under load, with one of them killed
//! (`#[ignore]`d: a minute or more of load; needs `TEST_PG_ADMIN_URL`, which scripts/test.sh
//! sets, and runs it with the reliability suite).
//!
//! Three servers share a fresh database. 100 clients each submit 20 MeTTa jobs (each with an
//! idempotency key, retried on another server when one does not answer) in 30 sessions, every
//! request to a random server, and long-wait for each job on a random server. Meanwhile one
//! server is killed with SIGKILL twice: the first time it stays down past the lease (the
//! others rescue its running jobs), the second time it comes back at once under the same
//! `HOST_ID` (it rescues its own). The database records every status change of every job
//! (a trigger the test installs, with the database's clock), so what is checked at the end is
//! what happened, not what the servers say:
//! - every accepted job reached exactly one final state, succeeded or (interrupted twice)
//!   failed, with `attempts` saying how often it started (at most twice);
//! - no session ever had two jobs running at once, and each session's jobs started in
//!   acceptance order (re-runs of an interrupted job included);
//! - sessions stay with a host: fewer than a quarter of the starts move a session;
//! - each session's history is its succeeded jobs in acceptance order, and the session's
//!   state equals a fresh hyperon replay of that history;
//! - every long-wait answered: a wait that came back with the job not final came back after
//!   its full wait, and the job indeed finished later.
//!
//! Jobs here take milliseconds, so a kill may find the victim between jobs (the log says how
//! many jobs were rescued); the rescue of a dead host's running job after the lease, by
//! another host, is shown every time by the second test of this file. The third shows that
//! a learner's pause does not move their session: after it, the next job waits for the busy
//! host that has the session live while another host is free.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    direct_hyperon_run, is_final, now_timestamp, psql, PostgresDatabase, Rng, TestServer,
};

const HOSTS: usize = 3;
const CLIENTS: usize = 100;
const JOBS_PER_CLIENT: usize = 20;
const SESSIONS: usize = 30;
const LEASE_SECS: u64 = 5;
const WAIT_SECS: u64 = 10;

/// The record of every status change, kept by the database itself.
const RECORDER: &str = r#"
CREATE TABLE test_transitions (
    id BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL, session_id TEXT, old_status TEXT,
    new_status TEXT NOT NULL, host TEXT, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION test_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_transitions (seq, session_id, old_status, new_status, host)
    VALUES (NEW.seq, NEW.session_id, OLD.status, NEW.status, NEW.host);
    RETURN NULL;
END $$;
CREATE TRIGGER test_record_transition AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION test_record_transition();
"#;

struct Shared {
    bases: RwLock<Vec<String>>,
    client: reqwest::Client,
    accepted: AtomicU64,
    /// Long-waits that came back with the job not final: (job id, a time shortly before
    /// the answer, as the service writes times; when the wait was sent and answered).
    early: std::sync::Mutex<Vec<(String, String, Instant, Instant)>>,
    problems: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn base(&self, rng: &mut Rng) -> String {
        let bases = self.bases.read().unwrap();
        bases[rng.below(bases.len() as u64) as usize].clone()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// One client: its jobs one after another, each submitted until accepted and waited for
/// until final. Returns (key, job id, final job) per job.
async fn run_client(shared: Arc<Shared>, client: usize) -> Vec<(String, String, Value)> {
    let mut rng = Rng(0x5eed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let session = format!("mh-{}", client % SESSIONS);
    let mut done = Vec::new();
    for job in 0..JOBS_PER_CLIENT {
        let key = format!("k-{client}-{job}");
        let body = json!({
            "language": "metta",
            "sessionId": session,
            "code": format!("(rec {})\n!(+ {client} {job})", client * 1000 + job),
        });
        let mut accepted: Option<Value> = None;
        for attempt in 0..400u32 {
            let base = shared.base(&mut rng);
            let request = shared
                .client
                .post(format!("{base}/api/v1/jobs?wait={WAIT_SECS}"))
                .header("Idempotency-Key", &key)
                .json(&body);
            match send(request).await {
                Ok((200 | 202, answer)) if answer["id"].is_string() => {
                    accepted = Some(answer);
                    break;
                }
                Ok((status, answer)) if status >= 500 || status == 409 => {
                    let _ = answer;
                }
                Ok((status, answer)) => {
                    shared
                        .problems
                        .lock()
                        .unwrap()
                        .push(format!("{key}: submit answered {status}: {answer}"));
                    break;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50 + 10 * u64::from(attempt.min(20)))).await;
        }
        let Some(mut current) = accepted else {
            shared
                .problems
                .lock()
                .unwrap()
                .push(format!("{key}: never accepted"));
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let id = current["id"].as_str().unwrap_or_default().to_string();
        let mut tries = 0;
        while !is_final(&current) && tries < 200 {
            tries += 1;
            let base = shared.base(&mut rng);
            let started = Instant::now();
            let request = shared
                .client
                .get(format!("{base}/api/v1/jobs/{id}?wait={WAIT_SECS}"));
            match send(request).await {
                Ok((200, answer)) => {
                    if !is_final(&answer) {
                        let before_answer = (chrono::Utc::now()
                            - chrono::Duration::milliseconds(300))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                        shared.early.lock().unwrap().push((
                            id.clone(),
                            before_answer,
                            started,
                            Instant::now(),
                        ));
                    }
                    current = answer;
                }
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        done.push((key, id, current));
    }
    done
}

struct Transition {
    seq: i64,
    session: String,
    old: String,
    new: String,
    host: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the multi-host reliability suite: three servers on one PostgreSQL under load with kills"]
async fn reliability_three_hosts_on_one_postgres_with_a_host_killed_twice() {
    // Arrange: three servers on one fresh database, the status changes recorded.
    let database = PostgresDatabase::create("multi_host");
    let lease = LEASE_SECS.to_string();
    let host_env = |i: usize| -> Vec<(String, String)> {
        vec![
            ("HOST_ID".into(), format!("host-{i}")),
            ("HOST_LEASE_SECS".into(), lease.clone()),
            ("MAX_LIVE_SESSIONS".into(), "64".into()),
            // Every client of the test comes from 127.0.0.1.
            ("RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ]
    };
    let mut servers = Vec::new();
    for i in 0..HOSTS {
        let env = host_env(i);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        servers.push(TestServer::start_sharing(&database.url, &env).await);
        if i == 0 {
            database.query(RECORDER);
        }
    }
    let shared = Arc::new(Shared {
        bases: RwLock::new(servers.iter().map(|server| server.base.clone()).collect()),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(WAIT_SECS + 30))
            .build()
            .expect("client"),
        accepted: AtomicU64::new(0),
        early: Default::default(),
        problems: Default::default(),
    });

    // Act: the clients, and the kills of server 1 (by accepted jobs, so under load).
    let total = (CLIENTS * JOBS_PER_CLIENT) as u64;
    let stop_chaos = Arc::new(AtomicBool::new(false));
    let chaos = {
        let shared = shared.clone();
        let stop = stop_chaos.clone();
        let mut victim = servers.remove(1);
        let url = database.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut kills = Vec::new();
            for (round, at) in [total / 4, total / 2].into_iter().enumerate() {
                while shared.accepted.load(Ordering::Relaxed) < at {
                    if stop.load(Ordering::Relaxed) {
                        return (victim, kills);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Kill it while it runs a job (looked for during at most 10 s), so the kill
                // interrupts one.
                let looking = Instant::now();
                while looking.elapsed() < Duration::from_secs(10)
                    && psql(
                        &url,
                        "SELECT count(*) FROM jobs WHERE status = 'running' AND host = 'host-1'",
                    )
                    .trim()
                        == "0"
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                victim.kill9();
                kills.push(now_timestamp());
                if round == 0 {
                    // Down past the lease: the other hosts rescue its running jobs.
                    std::thread::sleep(Duration::from_secs(LEASE_SECS + 2));
                }
                victim.restart();
                shared.bases.write().unwrap()[1] = victim.base.clone();
            }
            (victim, kills)
        })
    };
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(run_client(shared.clone(), client)));
    }
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.expect("client task"));
    }
    stop_chaos.store(true, Ordering::Relaxed);
    let (victim, kills) = chaos.await.expect("chaos task");
    servers.insert(1, victim);
    let elapsed = started.elapsed();
    eprintln!(
        "multi-host: {} jobs in {elapsed:.1?} over {HOSTS} hosts, kills at {kills:?}",
        outcomes.len()
    );

    // Assert: the clients' view.
    let problems = shared.problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(kills.len(), 2, "server 1 was killed twice under load");
    assert_eq!(outcomes.len(), CLIENTS * JOBS_PER_CLIENT);
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for (key, id, job) in &outcomes {
        assert!(is_final(job), "{key}: job {id} never final: {job}");
        assert!(
            by_id.insert(id.clone(), job.clone()).is_none(),
            "{key}: id {id} twice"
        );
    }

    // The database's view: every job, and every status change.
    let rows = psql(
        &database.url,
        "SELECT seq, id, session_id, status, attempts, \
                replace(COALESCE(error, ''), E'\\n', ' '), \
                replace(COALESCE(result, ''), E'\\n', ''), COALESCE(finished_at, '') \
         FROM jobs ORDER BY seq",
    );
    let mut jobs_by_session: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    let mut interrupted_twice = 0;
    let mut reran = 0;
    let mut finished_at: HashMap<String, String> = HashMap::new();
    for line in rows.lines().filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.splitn(8, '|').collect();
        let (seq, id, session, status, attempts, error, result, finished) = (
            fields[0].parse::<i64>().expect("seq"),
            fields[1],
            fields[2],
            fields[3],
            fields[4].parse::<i64>().expect("attempts"),
            fields[5],
            fields[6],
            fields[7],
        );
        let client_view = by_id
            .get(id)
            .unwrap_or_else(|| panic!("job {id} (seq {seq}) was stored but no client has it"));
        assert_eq!(client_view["status"], status, "job {id}: one final state");
        assert!((1..=2).contains(&attempts), "job {id}: attempts {attempts}");
        match status {
            "succeeded" => {
                let code = client_view["code"].as_str().unwrap_or_default();
                let (client, job) = code
                    .lines()
                    .find_map(|line| line.strip_prefix("!(+ "))
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|rest| rest.split_once(' '))
                    .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
                    .expect("the job's code");
                assert_eq!(result, format!("[{}]", client + job), "job {id}");
                if attempts == 2 {
                    reran += 1;
                }
            }
            "failed" => {
                assert!(
                    error.contains("interrupted") && attempts == 2,
                    "job {id} failed: {error} (attempts {attempts})"
                );
                interrupted_twice += 1;
            }
            other => panic!("job {id} ended {other}"),
        }
        finished_at.insert(id.to_string(), finished.to_string());
        jobs_by_session
            .entry(session.to_string())
            .or_default()
            .push((seq, id.to_string(), status.to_string()));
    }
    assert_eq!(
        by_id.len(),
        finished_at.len(),
        "every accepted job is stored once"
    );
    eprintln!("multi-host: {reran} jobs re-ran after an interruption, {interrupted_twice} failed interrupted twice");

    // No session ever had two jobs running at once; starts follow acceptance order.
    let transitions: Vec<Transition> = psql(
        &database.url,
        "SELECT seq, COALESCE(session_id, ''), COALESCE(old_status, ''), new_status, \
                COALESCE(host, '') FROM test_transitions ORDER BY at, id",
    )
    .lines()
    .filter(|line| !line.is_empty())
    .map(|line| {
        let f: Vec<&str> = line.splitn(5, '|').collect();
        Transition {
            seq: f[0].parse().expect("seq"),
            session: f[1].to_string(),
            old: f[2].to_string(),
            new: f[3].to_string(),
            host: f[4].to_string(),
        }
    })
    .collect();
    let mut running: HashMap<&str, (i64, &str)> = HashMap::new();
    let mut last_started: HashMap<&str, i64> = HashMap::new();
    let mut hosts_seen = std::collections::HashSet::new();
    for t in &transitions {
        if t.new == "running" {
            hosts_seen.insert(t.host.as_str());
            if let Some((other, host)) = running.get(t.session.as_str()) {
                panic!(
                    "session {}: job seq {} started on {} while seq {other} ran on {host}",
                    t.session, t.seq, t.host
                );
            }
            running.insert(&t.session, (t.seq, &t.host));
            let last = last_started.entry(&t.session).or_insert(t.seq);
            assert!(
                t.seq >= *last,
                "session {}: seq {} started after seq {last}",
                t.session,
                t.seq
            );
            *last = t.seq;
        } else if t.old == "running" {
            let held = running.remove(t.session.as_str());
            assert_eq!(
                held.map(|(seq, _)| seq),
                Some(t.seq),
                "session {}: seq {} left running but was not the running one",
                t.session,
                t.seq
            );
        }
    }
    assert_eq!(
        hosts_seen.len(),
        HOSTS,
        "every host ran jobs: {hosts_seen:?}"
    );
    // Affinity: a session's next job mostly goes to the host that ran its last one (which
    // has the session live), so sessions are not replayed on every job. Without it, with
    // three busy hosts, about two jobs in three would move.
    let mut last_host: HashMap<&str, &str> = HashMap::new();
    let mut moves = 0;
    let mut starts = 0;
    for t in transitions.iter().filter(|t| t.new == "running") {
        starts += 1;
        if let Some(previous) = last_host.insert(&t.session, &t.host) {
            if previous != t.host {
                moves += 1;
            }
        }
    }
    eprintln!("multi-host: {moves} of {starts} starts moved their session to another host");
    assert!(
        moves * 4 < starts,
        "{moves} of {starts} starts moved their session to another host"
    );
    let rescues = transitions
        .iter()
        .filter(|t| t.old == "running" && t.new == "queued")
        .count();
    eprintln!(
        "multi-host: {} status changes, {rescues} rescues",
        transitions.len()
    );

    // Every long-wait answered: one that came back with the job not final waited its full
    // time, and the job finished after the wait began.
    for (id, before_answer, sent, answered) in shared.early.lock().unwrap().iter() {
        assert!(
            answered.duration_since(*sent)
                >= Duration::from_secs(WAIT_SECS) - Duration::from_millis(200),
            "job {id}: a wait answered early with the job not final"
        );
        let finished = finished_at.get(id).map(String::as_str).unwrap_or("");
        assert!(
            finished > before_answer.as_str(),
            "job {id} finished at {finished}, yet a wait answering after {before_answer} did not see it"
        );
    }

    // Each session's history is its succeeded jobs in acceptance order, and its state equals
    // a fresh replay of that history.
    let mut rng = Rng(7);
    for (session, jobs) in &jobs_by_session {
        let base = shared.base(&mut rng);
        let (status, view) = send(
            shared
                .client
                .get(format!("{base}/api/v1/sessions/{session}")),
        )
        .await
        .expect("session view");
        assert_eq!(status, 200, "{view}");
        let cells = view["cells"].as_array().expect("cells");
        let cell_jobs: Vec<&str> = cells
            .iter()
            .map(|cell| cell["lastJobId"].as_str().unwrap_or_default())
            .collect();
        let succeeded: Vec<&str> = jobs
            .iter()
            .filter(|(_, _, status)| status == "succeeded")
            .map(|(_, id, _)| id.as_str())
            .collect();
        assert_eq!(
            cell_jobs, succeeded,
            "session {session}: history is its successes in order"
        );
        let history: String = cells
            .iter()
            .map(|cell| format!("{}\n", cell["code"].as_str().unwrap_or_default()))
            .collect();
        let probe = "!(collapse (match &self (rec $x) $x))";
        let probed = servers[rng.below(HOSTS as u64) as usize]
            .run(json!({"language": "metta", "sessionId": session, "code": probe}))
            .await;
        assert_eq!(probed["status"], "succeeded", "{probed}");
        let replayed = direct_hyperon_run(&format!("{history}{probe}\n"));
        assert_eq!(
            probed["result"].as_str().unwrap_or_default().lines().last(),
            replayed.lines().last(),
            "session {session}: the live session equals a fresh replay of its history"
        );
    }
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the multi-host reliability suite: needs the tests' PostgreSQL"]
async fn reliability_a_dead_hosts_running_job_is_rescued_by_another_host_after_the_lease() {
    // Arrange: two servers on one database; a slow job runs on one of them.
    let database = PostgresDatabase::create("lease");
    let env = |host: &'static str| [("HOST_ID", host), ("HOST_LEASE_SECS", "2")];
    let first = TestServer::start_sharing(&database.url, &env("a")).await;
    let second = TestServer::start_sharing(&database.url, &env("b")).await;
    let job = first
        .submit(json!({"language": "python", "code": "import time; time.sleep(2); print('done')"}))
        .await;
    let id = job["id"].as_str().expect("id").to_string();
    let runner = loop {
        let host = psql(
            &database.url,
            &format!(
                "SELECT COALESCE(host, '') FROM jobs WHERE id = '{id}' AND status = 'running'"
            ),
        );
        if !host.trim().is_empty() {
            break host.trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (mut dying, survivor) = if runner == "a" {
        (first, second)
    } else {
        (second, first)
    };
    let waiting = {
        let client = survivor.client.clone();
        let url = survivor.url(&format!("/api/v1/jobs/{id}?wait=30"));
        tokio::spawn(async move {
            client
                .get(url)
                .send()
                .await
                .expect("GET")
                .json::<Value>()
                .await
        })
    };

    // Act: the host running it dies and stays dead.
    let killed = Instant::now();
    dying.kill9();

    // Assert: after the lease, the survivor re-queues and runs it once more, and the wait
    // made on the survivor answers with its final state.
    let done = waiting.await.expect("wait task").expect("JSON");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "re-run once after the rescue: {done}");
    assert_eq!(done["output"], "done\n", "{done}");
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "rescued only after the lease ran out ({:?})",
        killed.elapsed()
    );
    let host = psql(
        &database.url,
        &format!("SELECT host FROM jobs WHERE id = '{id}'"),
    );
    assert_ne!(host.trim(), runner, "the survivor ran it");
    assert!(
        survivor
            .logs()
            .contains("rescued the running jobs of a host whose lease ran out"),
        "{}",
        survivor.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the multi-host reliability suite: needs the tests' PostgreSQL"]
async fn reliability_after_a_pause_a_sessions_job_waits_for_its_busy_host_not_the_next_free_one() {
    // Arrange: host a runs the first jobs of sessions "paused" and "busy", so it has both
    // live; then host b starts. The learner of "paused" pauses for longer than the affinity
    // window; then host a gets busy with a slow job of "busy" (shorter than the window).
    const WINDOW_MS: u64 = 3000;
    let database = PostgresDatabase::create("pause");
    let window = WINDOW_MS.to_string();
    let env = |host: &'static str| [("HOST_ID", host), ("SESSION_AFFINITY_MS", window.as_str())];
    let a = TestServer::start_sharing(&database.url, &env("a")).await;
    for session in ["paused", "busy"] {
        let first = a.metta(session, "(= (f) 1)").await;
        assert_eq!(first["status"], "succeeded", "{first}");
    }
    let b = TestServer::start_sharing(&database.url, &env("b")).await;
    let host_of = |id: &str| {
        psql(
            &database.url,
            &format!("SELECT COALESCE(host, '') || ' ' || status FROM jobs WHERE id = '{id}'"),
        )
        .trim()
        .to_string()
    };
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 1000)).await;
    let slow = a
        .submit(json!({"language": "metta", "sessionId": "busy", "code": "!((py-atom time.sleep) 1.5)"}))
        .await;
    let slow_id = slow["id"].as_str().expect("id").to_string();
    let started = Instant::now();
    while host_of(&slow_id) != "a running" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slow job did not start on a: {}",
            host_of(&slow_id)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Act: the paused learner's next job arrives at b, and right behind it a job of a new
    // session, which wakes b's worker while a is still busy.
    let next = b
        .submit(json!({"language": "metta", "sessionId": "paused", "code": "!(f)"}))
        .await;
    let other = b
        .submit(json!({"language": "metta", "sessionId": "newcomer", "code": "!(+ 1 1)"}))
        .await;

    // Assert: b ran the new session's job and left the paused session's to a, which has it
    // live (before, the pause had freed the session, and b took it and rebuilt it).
    let next = b.wait_final(next["id"].as_str().expect("id")).await;
    let other = b.wait_final(other["id"].as_str().expect("id")).await;
    assert_eq!(next["result"], "[1]\n", "{next}");
    assert_eq!(other["result"], "[2]\n", "{other}");
    let slow = a.wait_final(&slow_id).await;
    assert_eq!(slow["status"], "succeeded", "{slow}");
    assert_eq!(
        host_of(next["id"].as_str().expect("id")),
        "a succeeded",
        "the paused session's job went to the host that was free first: {next}"
    );
    assert_eq!(host_of(other["id"].as_str().expect("id")), "b succeeded");
}
