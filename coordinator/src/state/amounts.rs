//! Amounts of the held-resource dimensions (QPs, MRs, pinned MR bytes) and per-dimension
//! caps.

use serde::{Deserialize, Serialize};

/// A held-resource dimension: what allotments are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dim {
    Qp,
    Mr,
    MrBytes,
}

impl Dim {
    pub const ALL: [Dim; 3] = [Dim::Qp, Dim::Mr, Dim::MrBytes];

    pub fn name(self) -> &'static str {
        match self {
            Dim::Qp => "qp",
            Dim::Mr => "mr",
            Dim::MrBytes => "mr_bytes",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub qp: u64,
    pub mr: u64,
    pub mr_bytes: u64,
}

impl Amounts {
    pub const ZERO: Amounts = Amounts {
        qp: 0,
        mr: 0,
        mr_bytes: 0,
    };

    pub fn get(&self, d: Dim) -> u64 {
        match d {
            Dim::Qp => self.qp,
            Dim::Mr => self.mr,
            Dim::MrBytes => self.mr_bytes,
        }
    }

    pub fn set(&mut self, d: Dim, v: u64) {
        match d {
            Dim::Qp => self.qp = v,
            Dim::Mr => self.mr = v,
            Dim::MrBytes => self.mr_bytes = v,
        }
    }

    fn zip(self, other: Amounts, f: impl Fn(u64, u64) -> u64) -> Amounts {
        let mut out = Amounts::ZERO;
        for d in Dim::ALL {
            out.set(d, f(self.get(d), other.get(d)));
        }
        out
    }

    pub fn saturating_add(self, other: Amounts) -> Amounts {
        self.zip(other, u64::saturating_add)
    }

    pub fn saturating_sub(self, other: Amounts) -> Amounts {
        self.zip(other, u64::saturating_sub)
    }

    pub fn min(self, other: Amounts) -> Amounts {
        self.zip(other, u64::min)
    }

    pub fn max(self, other: Amounts) -> Amounts {
        self.zip(other, u64::max)
    }

    pub fn is_zero(&self) -> bool {
        *self == Amounts::ZERO
    }
}

/// Optional caps, one per dimension; `None` is "no cap".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub qp: Option<u64>,
    pub mr: Option<u64>,
    pub mr_bytes: Option<u64>,
}

impl Caps {
    pub fn get(&self, d: Dim) -> Option<u64> {
        match d {
            Dim::Qp => self.qp,
            Dim::Mr => self.mr,
            Dim::MrBytes => self.mr_bytes,
        }
    }

    /// What may still be added to `held` before the cap; `u64::MAX` where there is no cap.
    pub fn headroom(&self, held: Amounts) -> Amounts {
        let mut out = Amounts::ZERO;
        for d in Dim::ALL {
            out.set(
                d,
                self.get(d)
                    .map_or(u64::MAX, |cap| cap.saturating_sub(held.get(d))),
            );
        }
        out
    }

    /// Whether `held` is above the cap on any dimension.
    pub fn exceeded_by(&self, held: Amounts) -> bool {
        Dim::ALL
            .iter()
            .any(|&d| self.get(d).is_some_and(|cap| held.get(d) > cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_unbounded_without_a_cap_and_never_negative() {
        let caps = Caps {
            qp: Some(10),
            mr: None,
            mr_bytes: Some(5),
        };
        let held = Amounts {
            qp: 4,
            mr: 100,
            mr_bytes: 9,
        };
        let room = caps.headroom(held);
        assert_eq!((room.qp, room.mr, room.mr_bytes), (6, u64::MAX, 0));
        assert!(caps.exceeded_by(held));
    }
}
