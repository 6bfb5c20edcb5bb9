//! The end state, read once the load is over: the queue's counts, a probe job per session with
//! hyperon's own run of the session's history plus the probe as its reference, then (with the
//! server stopped) every stored job and the servers' logs.

use serde_json::{json, Value};

use super::faults::recoveries_in;
use super::workload::{
    session_name, str_of, submit_until_accepted, symbol, wait_until_final, Outcome, Shared,
};
use super::{CLIENTS, JOBS_PER_CLIENT, SESSIONS};
use crate::support::{
    bang_count, direct_hyperon_run, is_final, last_lines, stored_jobs, Rng, StoredJob, TestServer,
};

/// What the checks compare the clients' outcomes with.
pub struct EndState {
    /// `GET /api/v1/queue` at the end.
    pub queue: Value,
    /// Each session's probe that was answered.
    pub probes: Vec<Probe>,
    /// Per probe, what hyperon prints for the history plus the probe in a fresh `MeTTa()`.
    pub expected_probe_results: Vec<String>,
    /// The sessions whose probe was not answered.
    pub unanswered_probes: Vec<String>,
    /// Every stored job, in `seq` order.
    pub rows: Vec<StoredJob>,
    /// Everything the servers logged.
    pub logs: String,
    /// (re-queued, failed) of every start-up recovery the servers logged.
    pub recoveries: Vec<(u64, u64)>,
}

/// Reads the end state, probing each session, then stops the server (the last life) and reads
/// its database.
pub async fn read(
    mut server: TestServer,
    shared: &Shared,
    outcomes: &[Outcome],
    rng: &mut Rng,
    seed: u64,
) -> EndState {
    let total = CLIENTS * JOBS_PER_CLIENT;
    let client = &shared.client;
    let base = server.base.clone();
    let queue: Value = client
        .get(format!("{base}/api/v1/queue"))
        .send()
        .await
        .expect("GET /api/v1/queue")
        .json()
        .await
        .expect("queue JSON");

    let mut unanswered_probes = Vec::new();
    let mut probes: Vec<Probe> = Vec::new();
    for session in 0..SESSIONS {
        let name = session_name(session);
        let history: Value = match client
            .get(format!("{base}/api/v1/sessions/{name}"))
            .send()
            .await
            .expect("GET session")
        {
            response if response.status().as_u16() == 404 => json!({"cells": []}),
            response => response.json().await.expect("session JSON"),
        };
        let cells = history["cells"].as_array().cloned().unwrap_or_default();
        // Three calls: two planned definitions of the session and one number it never defined.
        let planned: Vec<u64> = outcomes
            .iter()
            .filter(|o| o.plan.session == Some(session) && o.plan.defined_value().is_some())
            .map(|o| o.plan.n)
            .collect();
        let mut calls: Vec<u64> = (0..2)
            .filter_map(|_| {
                planned
                    .get(rng.below(planned.len() as u64) as usize)
                    .copied()
            })
            .collect();
        calls.push(total as u64 + session as u64);
        let code = probe_code(session, &calls);
        let key = format!("rel-{seed:x}-probe-{session}");
        let body = json!({"language": "metta", "code": code, "sessionId": name});
        let mut probe_rng = Rng(seed ^ session as u64);
        let (accepted, _, _) = submit_until_accepted(shared, &mut probe_rng, &key, &body).await;
        let probe = match accepted {
            Some(job) if is_final(&job) => Some(job),
            Some(job) => {
                let id = str_of(&job, "id").unwrap_or_default();
                wait_until_final(shared, &mut probe_rng, &id, None).await
            }
            None => None,
        };
        match probe {
            Some(job) => probes.push(Probe {
                session,
                key,
                code,
                calls,
                job,
                cells,
            }),
            None => unanswered_probes.push(format!("the probe of {name} was not answered")),
        }
    }
    // The references: hyperon directly, history + probe in one fresh MeTTa(), in parallel.
    let references: Vec<_> = probes
        .iter()
        .map(|Probe { code, cells, .. }| {
            let mut program: String = cells
                .iter()
                .map(|cell| format!("{}\n", cell["code"].as_str().unwrap_or_default()))
                .collect();
            program.push_str(code);
            let lines = bang_count(code);
            tokio::task::spawn_blocking(move || last_lines(&direct_hyperon_run(&program), lines))
        })
        .collect();
    let mut expected_probe_results = Vec::new();
    for reference in references {
        expected_probe_results.push(reference.await.expect("direct hyperon run"));
    }

    server.kill9();
    let rows = stored_jobs(&server).await;
    let logs = server.logs();
    let recoveries = recoveries_in(&logs);
    EndState {
        queue,
        probes,
        expected_probe_results,
        unanswered_probes,
        rows,
        logs,
        recoveries,
    }
}

/// The probe of a session: its `k` atoms, the arguments its `vS` is defined for, and three calls.
pub fn probe_code(session: usize, calls: &[u64]) -> String {
    let f = symbol(session);
    let mut code = format!(
        "!(collapse (match &self (k $x) $x))\n!(collapse (match &self (= ({f} $n) $body) $n))"
    );
    for n in calls {
        code.push_str(&format!("\n!({f} {n})"));
    }
    code
}

/// A result's lines with the atoms of each `[(a b c)]` line sorted: the order `match` yields
/// atoms in is hyperon's business, the set is the session's.
pub fn canonical(result: &str) -> Vec<String> {
    result
        .lines()
        .map(|line| match numbers_of(line) {
            Some(mut atoms) => {
                atoms.sort_unstable();
                format!("{atoms:?}")
            }
            None => line.to_string(),
        })
        .collect()
}

/// The atoms of a `[(a b c)]` result line (`[()]`: none), or `None` for another shape.
pub fn numbers_of(line: &str) -> Option<Vec<u64>> {
    let inner = line.strip_prefix("[(")?.strip_suffix(")]")?;
    inner
        .split_whitespace()
        .map(|atom| atom.parse().ok())
        .collect()
}

/// A session's probe job and what it was compared with.
pub struct Probe {
    pub session: usize,
    pub key: String,
    pub code: String,
    /// The arguments of the probe's calls of the session's function.
    pub calls: Vec<u64>,
    /// The probe job, final.
    pub job: Value,
    /// The session's history just before the probe.
    pub cells: Vec<Value>,
}
