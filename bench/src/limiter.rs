//! A token bucket shared by all clients of a run, for `--rate`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets `rate` operations through per second on average, with bursts of at
/// most `burst`. Each caller reserves a token and sleeps until it is due, so
/// waiting clients are served in the order they asked.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket that starts full. `rate` must be positive; `burst` is at least 1.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        assert!(rate > 0.0, "rate must be positive");
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Waits until the caller may send one operation.
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one token at `now` and says how long to wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().expect("limiter lock");
        let refill = now.saturating_duration_since(s.last).as_secs_f64() * self.rate;
        s.tokens = (s.tokens + refill).min(self.burst);
        s.last = s.last.max(now);
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_through_without_waiting() {
        let b = TokenBucket::new(10.0, 3.0);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.reserve(now), Duration::ZERO);
        }
    }

    #[test]
    fn callers_past_the_burst_are_spaced_one_interval_apart() {
        let b = TokenBucket::new(10.0, 1.0);
        let now = Instant::now();
        assert_eq!(b.reserve(now), Duration::ZERO);
        let second = b.reserve(now).as_secs_f64();
        let third = b.reserve(now).as_secs_f64();
        assert!((second - 0.1).abs() < 1e-9, "{second}");
        assert!((third - 0.2).abs() < 1e-9, "{third}");
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let b = TokenBucket::new(100.0, 2.0);
        let start = Instant::now();
        b.reserve(start);
        b.reserve(start);
        let later = start + Duration::from_secs(60);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert!(b.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn the_long_run_rate_is_the_configured_rate() {
        let b = TokenBucket::new(1000.0, 1.0);
        let now = Instant::now();
        let last = (0..1001).map(|_| b.reserve(now)).last().unwrap();
        assert!((last.as_secs_f64() - 1.0).abs() < 1e-6, "{last:?}");
    }
}
