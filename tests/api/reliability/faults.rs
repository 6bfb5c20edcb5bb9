//! The faults: a schedule of server and engine kills at progress points drawn from the seed,
//! the thread that carries it out during the load, and what it logged (for the checks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workload::Shared;
use super::{ENGINE_KILLS, KILL_WINDOW_PERCENT, RECOVERY_LOG, SERVER_KILLS};
use crate::support::{now_timestamp, send_signal, Rng, Signal, TestServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chaos {
    KillServer,
    KillEngine,
}

#[derive(Debug, Clone)]
pub struct ChaosEvent {
    /// Fire once this many logical jobs are finished...
    pub at_finished: usize,
    /// ... and this many milliseconds more have passed.
    pub jitter_ms: u64,
    pub what: Chaos,
}

pub fn chaos_schedule(rng: &mut Rng, total: usize) -> Vec<ChaosEvent> {
    let (low, high) = (
        total * KILL_WINDOW_PERCENT.0 / 100,
        total * KILL_WINDOW_PERCENT.1 / 100,
    );
    let mut events: Vec<ChaosEvent> = std::iter::repeat_n(Chaos::KillServer, SERVER_KILLS)
        .chain(std::iter::repeat_n(Chaos::KillEngine, ENGINE_KILLS))
        .map(|what| ChaosEvent {
            at_finished: low + rng.below((high - low) as u64) as usize,
            jitter_ms: rng.below(400),
            what,
        })
        .collect();
    events.sort_by_key(|event| event.at_finished);
    events
}

#[derive(Debug, Default)]
pub struct ChaosLog {
    /// When each server life began (taken just before starting it): index = epoch.
    pub launches: Vec<String>,
    /// (finished logical jobs, time taken just after the server was dead) per server kill.
    pub server_kills: Vec<(usize, String)>,
    /// (finished logical jobs, engine pid) per engine kill delivered.
    pub engine_kills: Vec<(usize, u32)>,
    /// Engine kills that found no engine to kill within 5 s.
    pub engine_misses: usize,
    /// How long each restart took until the server listened.
    pub restart_times: Vec<Duration>,
}

/// Sets `abort` if the chaos thread panics, so clients stop waiting for a server.
pub struct AbortOnPanic(Arc<Shared>);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort.store(true, Ordering::SeqCst);
        }
    }
}

pub fn run_chaos(
    mut server: TestServer,
    shared: Arc<Shared>,
    events: Vec<ChaosEvent>,
    done: Arc<AtomicBool>,
    mut log: ChaosLog,
) -> (TestServer, ChaosLog) {
    let _guard = AbortOnPanic(shared.clone());
    let mut next = 0;
    loop {
        let finished = shared.finished.load(Ordering::SeqCst);
        if let Some(event) = events.get(next).filter(|e| finished >= e.at_finished) {
            std::thread::sleep(Duration::from_millis(event.jitter_ms));
            let finished = shared.finished.load(Ordering::SeqCst);
            match event.what {
                Chaos::KillServer => {
                    server.kill9();
                    log.server_kills.push((finished, now_timestamp()));
                    // Keep the next life's timestamps apart from the last one's.
                    std::thread::sleep(Duration::from_millis(5));
                    log.launches.push(now_timestamp());
                    let restarting = Instant::now();
                    server.restart();
                    log.restart_times.push(restarting.elapsed());
                    *shared.base.write().unwrap() = server.base.clone();
                }
                Chaos::KillEngine => {
                    let looking = Instant::now();
                    loop {
                        if let Some(pid) = server.engine_pid() {
                            if send_signal(pid, Signal::KILL) {
                                log.engine_kills.push((finished, pid));
                                break;
                            }
                        }
                        if looking.elapsed() > Duration::from_secs(5) {
                            log.engine_misses += 1;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            next += 1;
            continue;
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (server, log)
}

/// (re-queued, failed) of every start-up recovery the servers logged.
pub fn recoveries_in(logs: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .and_then(|value| {
                value
                    .trim_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    logs.lines()
        .filter(|line| line.contains(RECOVERY_LOG))
        .map(|line| (field(line, "requeued="), field(line, "failed=")))
        .collect()
}

/// The server life (0 = the first) a timestamp falls in.
pub fn epoch_of(launches: &[String], at: &str) -> usize {
    launches
        .iter()
        .rposition(|launch| launch.as_str() <= at)
        .unwrap_or(0)
}
