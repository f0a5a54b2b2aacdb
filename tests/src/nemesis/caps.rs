//! Which caps may be in force at an instant, from the quota writes alone: a write is in
//! force from some moment between being sent and acknowledged; one that failed or timed out
//! may or may not have been applied (the checker allows both).

use std::time::Duration;

use super::record::{Dim, QuotaWrite};

pub struct CapHistory<'a> {
    initial: [u64; 2],
    /// This tenant's writes, in the order they were sent (the nemesis writes one at a time).
    writes: Vec<&'a QuotaWrite>,
}

impl<'a> CapHistory<'a> {
    pub fn new(tenant: &str, initial: [u64; 2], all: &'a [QuotaWrite]) -> Self {
        let mut writes: Vec<_> = all.iter().filter(|w| w.tenant == tenant).collect();
        writes.sort_by_key(|w| w.sent);
        CapHistory { initial, writes }
    }

    /// The values that may be in force at `t`: the last write acknowledged by then (or the
    /// initial caps), and any write sent after it and by `t` that was still in flight at `t`
    /// or never acknowledged.
    pub fn possible(&self, t: Duration, dim: Dim) -> Vec<u64> {
        let d = dim as usize;
        let last_acked = self.writes.iter().rposition(|w| w.acked && w.done <= t);
        let mut out = vec![last_acked.map_or(self.initial[d], |i| self.writes[i].caps[d])];
        let after = last_acked.map_or(0, |i| i + 1);
        out.extend(
            self.writes[after..]
                .iter()
                .filter(|w| w.sent <= t && (!w.acked || w.done > t))
                .map(|w| w.caps[d]),
        );
        out
    }

    /// The highest cap possibly in force at any instant of `[t - lag, t]` (agents take up
    /// to `lag` to learn of a change).
    pub fn highest(&self, t: Duration, lag: Duration, dim: Dim) -> u64 {
        self.over(t, lag, dim).into_iter().max().unwrap_or(0)
    }

    /// The lowest cap possibly in force at any instant of `[t - lag, t]`.
    pub fn lowest(&self, t: Duration, lag: Duration, dim: Dim) -> u64 {
        self.over(t, lag, dim).into_iter().min().unwrap_or(0)
    }

    fn over(&self, t: Duration, lag: Duration, dim: Dim) -> Vec<u64> {
        let from = t.saturating_sub(lag);
        let mut values = self.possible(from, dim);
        for w in self.writes.iter().filter(|w| w.sent > from && w.sent <= t) {
            values.push(w.caps[dim as usize]);
        }
        values.extend(self.possible(t, dim));
        values
    }

    /// When the latest write by `t` that lowered `dim` became known everywhere at the
    /// latest (its acknowledgment, or `t` while it is in flight or unacknowledged).
    pub fn last_lowered(&self, t: Duration, dim: Dim) -> Option<Duration> {
        let d = dim as usize;
        let mut before = self.initial[d];
        let mut last = None;
        for w in self.writes.iter().filter(|w| w.sent <= t) {
            if w.caps[d] < before {
                last = Some(if w.acked && w.done <= t { w.done } else { t });
            }
            if w.acked {
                before = w.caps[d];
            } else {
                // An unacknowledged write may have been applied: what it lowered from is
                // the higher of the two.
                before = before.max(w.caps[d]);
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(caps: u64, sent: u64, done: u64, acked: bool) -> QuotaWrite {
        QuotaWrite {
            tenant: "t".into(),
            caps: [caps, caps],
            sent: Duration::from_secs(sent),
            done: Duration::from_secs(done),
            acked,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn in_flight_and_failed_writes_may_be_in_force_acknowledged_ones_replace_the_past() {
        let writes = [w(4, 10, 12, true), w(8, 20, 25, false), w(2, 30, 31, true)];
        let h = CapHistory::new("t", [6, 6], &writes);
        assert_eq!(h.possible(S(5), Dim::Qp), vec![6]);
        assert_eq!(h.possible(S(11), Dim::Qp), vec![6, 4]);
        assert_eq!(h.possible(S(15), Dim::Qp), vec![4]);
        assert_eq!(h.possible(S(26), Dim::Qp), vec![4, 8]);
        assert_eq!(h.possible(S(32), Dim::Qp), vec![2]);
        assert_eq!(h.highest(S(33), S(3), Dim::Qp), 8);
        assert_eq!(h.highest(S(40), S(3), Dim::Qp), 2);
        assert_eq!(h.lowest(S(21), S(3), Dim::Qp), 4);
        assert_eq!(h.last_lowered(S(11), Dim::Qp), Some(S(11)));
        assert_eq!(h.last_lowered(S(20), Dim::Qp), Some(S(12)));
        assert_eq!(h.last_lowered(S(40), Dim::Qp), Some(S(31)));
        assert_eq!(
            CapHistory::new("t", [6, 6], &[]).last_lowered(S(9), Dim::Qp),
            None
        );
    }
}
