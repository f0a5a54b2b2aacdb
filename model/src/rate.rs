//! Creation-rate limits: a refilling token bucket (`per_sec` creations per second, with a
//! burst of one second's worth). The caller says what time it is, so it is pure.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RateBucket {
    per_sec: u32,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateBucket {
    /// A full bucket at `now`.
    pub fn new(per_sec: u32, now: Instant) -> RateBucket {
        RateBucket {
            per_sec,
            rate: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: now,
        }
    }

    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Takes one token at `now` if there is one.
    pub fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = RateBucket::new(10, t0);
        let granted = (0..20).filter(|_| b.take_at(t0)).count();
        assert_eq!(granted, 10, "burst of one second's worth");
        assert!(!b.take_at(t0 + Duration::from_millis(50)));
        assert!(
            b.take_at(t0 + Duration::from_millis(150)),
            "refilled after 100 ms"
        );
    }
}
