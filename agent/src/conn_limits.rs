//! How many connections the agent's socket holds, per peer uid and in all, counted from
//! `accept` (before the client says anything): a local user who opens connections and
//! never speaks uses up their own uid's share, never everyone's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The counts, shared by the accept loop and the connections' guards.
#[derive(Debug)]
pub struct ConnLimits {
    per_uid: usize,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This uid already holds `max_connections_per_uid`.
    Uid,
    /// The agent already holds `max_connections`.
    Total,
}

/// A connection's place in the counts, given back when it is dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnLimits>,
    uid: u32,
}

impl ConnLimits {
    pub fn new(per_uid: usize, total: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            per_uid,
            total,
            counts: Mutex::default(),
        })
    }

    /// Takes a slot for a connection from `uid`, if both limits allow it.
    pub fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, Full> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.total {
            return Err(Full::Total);
        }
        let mine = c.by_uid.entry(uid).or_default();
        if *mine >= self.per_uid {
            return Err(Full::Uid);
        }
        *mine += 1;
        c.total += 1;
        Ok(Slot {
            limits: self.clone(),
            uid,
        })
    }

    /// Connections held now: in all, and by `uid`.
    pub fn held(&self, uid: u32) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.total, c.by_uid.get(&uid).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_fills_its_share_and_others_still_get_in() {
        let l = ConnLimits::new(2, 3);
        let a1 = l.take(1000).unwrap();
        let _a2 = l.take(1000).unwrap();
        assert_eq!(l.take(1000).unwrap_err(), Full::Uid);
        let _b1 = l.take(0).unwrap();
        assert_eq!(l.take(0).unwrap_err(), Full::Total, "3 in all");
        // A closed connection frees its place, for its uid and in all.
        drop(a1);
        assert_eq!(l.held(1000), (2, 1));
        let _a3 = l.take(1000).unwrap();
        assert_eq!(l.held(1000), (3, 2));
    }

    #[test]
    fn counts_go_back_to_zero() {
        let l = ConnLimits::new(10, 10);
        let slots: Vec<Slot> = (0..10).map(|i| l.take(i % 3).unwrap()).collect();
        drop(slots);
        assert_eq!(l.held(0), (0, 0));
        assert!(l.counts.lock().unwrap().by_uid.is_empty());
    }
}
