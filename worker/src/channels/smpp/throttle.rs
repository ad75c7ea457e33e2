//! The channel's send rate: `throughput` messages per second across all of
//! its sessions (a GCRA token bucket), and the pause a throttling answer
//! from the provider imposes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Submissions allowed in a burst beyond the steady rate: small, so the
/// provider sees the rate it agreed to within any one second.
const BURST: f64 = 2.0;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);

pub struct Throttle {
    interval: Option<Duration>,
    state: Mutex<State>,
}

struct State {
    /// Theoretical arrival time of the next submission.
    next: Instant,
    /// Set while the provider asked us to slow down.
    paused_until: Option<Instant>,
    /// The current pause after a throttling answer; doubles while they keep
    /// coming.
    pause: Duration,
}

impl Throttle {
    /// `per_second` = 0: no limit of our own.
    pub fn new(per_second: f64) -> Throttle {
        Throttle {
            interval: (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second)),
            state: Mutex::new(State {
                next: Instant::now(),
                paused_until: None,
                pause: FIRST_PAUSE,
            }),
        }
    }

    /// Takes one submission now, or says how long to wait for it.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap();
        if let Some(until) = s.paused_until {
            if until > now {
                return Err(until - now);
            }
            s.paused_until = None;
        }
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let tolerance = interval.mul_f64(BURST);
        if s.next > now + tolerance {
            return Err(s.next - now - tolerance);
        }
        s.next = s.next.max(now) + interval;
        Ok(())
    }

    /// The provider answered "throttled" or "queue full": pause, longer
    /// each time until a submission is accepted again. Returns the pause.
    pub fn slow_down(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap();
        let pause = s.pause;
        let until = now + pause;
        if s.paused_until.is_none_or(|u| u < until) {
            s.paused_until = Some(until);
        }
        s.pause = (pause * 2).min(MAX_PAUSE);
        pause
    }

    /// The provider said when to come back (HTTP `Retry-After`): pause
    /// that long, whatever the current pause.
    pub fn pause_for(&self, now: Instant, wait: Duration) {
        let mut s = self.state.lock().unwrap();
        let until = now + wait;
        if s.paused_until.is_none_or(|u| u < until) {
            s.paused_until = Some(until);
        }
    }

    /// A submission was accepted: the next throttling starts small again.
    pub fn accepted(&self) {
        self.state.lock().unwrap().pause = FIRST_PAUSE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate() {
        let t = Throttle::new(100.0);
        let start = Instant::now();
        let mut now = start;
        let mut sent = 0;
        // Simulated time: take whenever allowed for one second.
        while now < start + Duration::from_secs(1) {
            match t.take(now) {
                Ok(()) => sent += 1,
                Err(wait) => now += wait,
            }
        }
        assert!((100..=103).contains(&sent), "{sent}");
    }

    #[test]
    fn unlimited_without_a_rate_and_pauses_grow() {
        let t = Throttle::new(0.0);
        let now = Instant::now();
        assert!((0..1000).all(|_| t.take(now).is_ok()));
        assert_eq!(t.slow_down(now), FIRST_PAUSE);
        assert!(t.take(now).is_err());
        assert_eq!(t.slow_down(now), FIRST_PAUSE * 2);
        t.accepted();
        assert_eq!(t.slow_down(now), FIRST_PAUSE);
        assert!(t.take(now + MAX_PAUSE).is_ok());
    }
}
