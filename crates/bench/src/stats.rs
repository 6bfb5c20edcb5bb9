//! Samples and what the report says of them: latencies with the wall time they took
//! together, throughput, nearest-rank percentiles.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

/// Latency samples of N operations and the wall time they took together.
pub(crate) struct Timed {
    pub(crate) samples: Vec<Duration>,
    pub(crate) wall: Duration,
}

/// Times `runs` calls of `operation`, one after another.
pub(crate) fn time_each(runs: usize, mut operation: impl FnMut() -> Result<()>) -> Result<Timed> {
    let mut samples = Vec::with_capacity(runs);
    let started = Instant::now();
    for _ in 0..runs {
        let one = Instant::now();
        operation()?;
        samples.push(one.elapsed());
    }
    Ok(Timed {
        samples,
        wall: started.elapsed(),
    })
}

impl Timed {
    /// Samples of operations run one after another, with nothing between them.
    pub(crate) fn back_to_back(samples: Vec<Duration>) -> Timed {
        let wall = samples.iter().sum();
        Timed { samples, wall }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) throughput_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) mean_ms: f64,
}

impl Summary {
    pub(crate) fn of(timed: &Timed) -> Summary {
        let samples: Vec<f64> = timed.samples.iter().map(|d| ms(*d)).collect();
        let n = samples.len();
        Summary {
            n,
            throughput_per_s: n as f64 / timed.wall.as_secs_f64().max(f64::MIN_POSITIVE),
            p50_ms: percentile(&samples, 0.50),
            p99_ms: percentile(&samples, 0.99),
            mean_ms: samples.iter().sum::<f64>() / n.max(1) as f64,
        }
    }
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile (`p` in 0..=1); 0 for no samples.
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}
