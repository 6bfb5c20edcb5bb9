//! Per-client rate limit on requests that submit work (POST, DELETE): a token bucket per
//! client address, `RATE_LIMIT_BURST` deep, refilled at `RATE_LIMIT_PER_MINUTE` (`governor`'s
//! GCRA, which is that bucket kept as one timestamp per client). Over the limit the answer is
//! 429 with Retry-After, and nothing is stored. Reads are not limited.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;

use super::serve::client_address;
use super::wire::ErrorBody;

/// Clients tracked before those whose bucket has refilled are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

type Buckets<C> = governor::RateLimiter<
    IpAddr,
    DefaultKeyedStateStore<IpAddr>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Shared by every request. The clock is a parameter so the unit test can move time.
#[derive(Debug, Clone)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    trust_forwarded_for: bool,
    clock: C,
    buckets: Arc<Buckets<C>>,
}

impl RateLimiter {
    /// `None` when the limit is off (`per_minute == 0`).
    pub fn new(per_minute: u32, burst: u32, trust_forwarded_for: bool) -> Option<Self> {
        RateLimiter::with_clock(
            per_minute,
            burst,
            trust_forwarded_for,
            DefaultClock::default(),
        )
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(
        per_minute: u32,
        burst: u32,
        trust_forwarded_for: bool,
        clock: C,
    ) -> Option<Self> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute)?)
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Some(RateLimiter {
            trust_forwarded_for,
            buckets: Arc::new(governor::RateLimiter::hashmap_with_clock(
                quota,
                clock.clone(),
            )),
            clock,
        })
    }

    /// Takes a token for `client`, or says how long until one is free.
    fn take(&self, client: IpAddr) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_TRACKED_CLIENTS {
            // A bucket that has refilled completely carries no information: forget it.
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The middleware.
pub async fn limit_submissions(
    State(limiter): State<Option<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limiter) = limiter else {
        return next.run(request).await;
    };
    if !matches!(*request.method(), Method::POST | Method::DELETE) {
        return next.run(request).await;
    }
    let Some(client) = client_address(
        request.headers(),
        request.extensions(),
        limiter.trust_forwarded_for,
    ) else {
        return next.run(request).await;
    };
    match limiter.take(client) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            crate::service_metrics::request_refused("rate_limited");
            let seconds = wait.as_secs().max(1);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(ErrorBody {
                    error: format!("too many requests from this client; try again in {seconds} s"),
                }),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(60, 3, false, clock.clone()).expect("on");
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.take(client).is_ok());
        }
        let wait = limiter.take(client).expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1));
        assert!(wait > Duration::ZERO);
        clock.advance(Duration::from_secs(1));
        assert!(limiter.take(client).is_ok());
        assert!(limiter.take(client).is_err(), "one token per second");
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.take(other).is_ok(), "clients are counted apart");
    }

    #[test]
    fn no_rate_means_no_limit_and_a_zero_burst_means_one() {
        assert!(RateLimiter::new(0, 10, false).is_none());
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(60, 0, false, clock).expect("on");
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limiter.take(client).is_ok());
        assert!(limiter.take(client).is_err());
    }

    #[test]
    fn refilled_clients_are_forgotten_past_the_cap() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(60, 1, false, clock.clone()).expect("on");
        for i in 0..MAX_TRACKED_CLIENTS as u32 {
            assert!(limiter.take(IpAddr::from(i.to_be_bytes())).is_ok());
        }
        clock.advance(Duration::from_secs(2));
        assert!(limiter.take("10.255.0.1".parse().unwrap()).is_ok());
        assert!(limiter.buckets.len() < MAX_TRACKED_CLIENTS);
    }
}
