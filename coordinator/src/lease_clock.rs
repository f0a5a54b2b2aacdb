//! The cluster's lease clock: the time leases are granted, renewed and reclaimed by. It is
//! stamped into every log entry by the leader that writes it, and it runs only on the
//! leader's monotonic clock: from the state's time when the leader's term began, plus the
//! time elapsed since on that member. A wall-clock step on any member, or a new leader
//! whose wall clock is hours ahead, changes nothing; an election's gap only ever pauses it,
//! which lengthens leases (safe: agents stop admitting by their own clocks). The wall clock
//! is still stamped beside it, for people (audit times, displayed expiries) and nothing
//! else.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One member's stamps.
#[derive(Debug)]
pub struct LeaseClock {
    /// The term (and its start: state time, and this member's monotonic instant) the
    /// stamps are counted from.
    base: Option<(u64, u64, Instant)>,
    /// Test-only shift of this member's wall clock (a member whose clock is wrong).
    wall_offset_ms: i64,
}

/// One entry's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The lease clock.
    pub now_ms: u64,
    /// This member's wall clock (Unix ms), for display.
    pub wall_ms: u64,
}

impl LeaseClock {
    pub fn new(wall_offset_ms: i64) -> LeaseClock {
        LeaseClock {
            base: None,
            wall_offset_ms,
        }
    }

    /// The stamp for an entry written now, in `term`, when the state's lease clock reads
    /// `state_ms` (what this member has applied). A new term starts from there.
    pub fn stamp(&mut self, term: u64, state_ms: u64) -> Stamp {
        self.stamp_at(term, state_ms, Instant::now(), wall_ms())
    }

    pub(crate) fn stamp_at(&mut self, term: u64, state_ms: u64, now: Instant, wall: u64) -> Stamp {
        let (_, base_ms, since) = match self.base {
            Some(b) if b.0 == term => b,
            _ => *self.base.insert((term, state_ms, now)),
        };
        let mut now_ms = base_ms + now.saturating_duration_since(since).as_millis() as u64;
        if state_ms > now_ms {
            // The term began before this member had applied its predecessors' last entries
            // (a restart): count on from the latest of them, so that time pauses only for
            // as long as that catching up took.
            self.base = Some((term, state_ms, now));
            now_ms = state_ms;
        }
        Stamp {
            now_ms,
            wall_ms: wall.saturating_add_signed(self.wall_offset_ms),
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn it_runs_on_elapsed_time_only_and_starts_each_term_from_the_state() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(0);
        // Term 3 begins with the state at 50_000: 2 s later, 52_000, whatever the wall says.
        assert_eq!(c.stamp_at(3, 50_000, t0, 1).now_ms, 50_000);
        let s = c.stamp_at(3, 50_500, t0 + Duration::from_secs(2), 9_999_999_999);
        assert_eq!((s.now_ms, s.wall_ms), (52_000, 9_999_999_999));
        // A wall clock stepped back an hour changes nothing either.
        assert_eq!(
            c.stamp_at(3, 0, t0 + Duration::from_secs(3), 0).now_ms,
            53_000
        );
        // A state found ahead (earlier entries applied late) is counted on from.
        assert_eq!(
            c.stamp_at(3, 60_000, t0 + Duration::from_secs(3), 0).now_ms,
            60_000
        );
        assert_eq!(
            c.stamp_at(3, 0, t0 + Duration::from_secs(4), 0).now_ms,
            61_000
        );
        // A new term (this member leads again after others did) starts from what the state
        // reads then: the time others' entries reached.
        assert_eq!(
            c.stamp_at(5, 70_000, t0 + Duration::from_secs(4), 0).now_ms,
            70_000
        );
        assert_eq!(
            c.stamp_at(5, 0, t0 + Duration::from_secs(5), 0).now_ms,
            71_000
        );
    }

    #[test]
    fn the_test_offset_moves_only_the_wall_clock() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(-3_600_000);
        let s = c.stamp_at(1, 10, t0, 4_000_000);
        assert_eq!((s.now_ms, s.wall_ms), (10, 400_000));
    }
}
