//! Rates: how an SMPP account's throughput and an API key's rate limit
//! are kept on each worker.

use std::sync::Mutex;
use std::time::Instant;

/// A rate per second on this worker: a token bucket holding one second's
/// worth, so a client's window (or burst) may arrive at once.
pub struct Rate {
    state: Mutex<Bucket>,
}

struct Bucket {
    per_second: Option<f64>,
    tokens: f64,
    at: Instant,
}

impl Rate {
    pub fn new(per_second: Option<f64>) -> Rate {
        Rate {
            state: Mutex::new(Bucket {
                per_second,
                tokens: per_second.unwrap_or(0.0).max(1.0),
                at: Instant::now(),
            }),
        }
    }

    /// The rate changed (an account's throughput or this worker's share of
    /// it, a key's rate limit).
    pub fn set(&self, per_second: Option<f64>) {
        self.state.lock().unwrap().per_second = per_second;
    }

    /// Takes one now, or says no (ESME_RTHROTTLED, HTTP 429).
    pub fn take(&self, now: Instant) -> bool {
        let mut b = self.state.lock().unwrap();
        let Some(rate) = b.per_second else {
            return true;
        };
        let burst = rate.max(1.0);
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_allows_a_second_at_once_then_its_pace() {
        let rate = Rate::new(Some(10.0));
        let start = Instant::now();
        let taken = (0..20).filter(|_| rate.take(start)).count();
        assert_eq!(taken, 10);
        assert!(!rate.take(start + Duration::from_millis(50)));
        assert!(rate.take(start + Duration::from_millis(100)));
        let unlimited = Rate::new(None);
        assert!((0..10_000).all(|_| unlimited.take(start)));
        rate.set(None);
        assert!(rate.take(start + Duration::from_millis(100)));
    }
}
