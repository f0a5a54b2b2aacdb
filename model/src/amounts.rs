//! Amounts of the held-resource dimensions (QPs, MRs, pinned MR bytes), and caps on them.

use serde::{Deserialize, Serialize};

use crate::Resource;

/// A held-resource dimension: what quotas cap and allotments are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// How much of each dimension: held, allotted, granted, or a budget. Arithmetic saturates
/// (a budget of `u64::MAX` is "no cap" and stays so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A budget without a cap on any dimension.
    pub const UNLIMITED: Amounts = Amounts {
        qp: u64::MAX,
        mr: u64::MAX,
        mr_bytes: u64::MAX,
    };

    /// `n` QPs.
    pub const fn qps(n: u64) -> Amounts {
        Amounts {
            qp: n,
            mr: 0,
            mr_bytes: 0,
        }
    }

    /// `count` objects of `resource`, each pinning `bytes` (MRs; ignored for QPs).
    pub fn of(resource: Resource, count: u64, bytes: u64) -> Amounts {
        match resource {
            Resource::Qp => Amounts::qps(count),
            Resource::Mr => Amounts {
                qp: 0,
                mr: count,
                mr_bytes: bytes.saturating_mul(count),
            },
        }
    }

    /// The object count of `resource` (QPs or MRs).
    pub fn count(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Qp => self.qp,
            Resource::Mr => self.mr,
        }
    }

    /// How many more objects of `resource`, each pinning `bytes`, fit in this budget.
    pub fn fits(&self, resource: Resource, bytes: u64) -> u64 {
        match resource {
            Resource::Qp => self.qp,
            Resource::Mr => self.mr.min(self.mr_bytes / bytes.max(1)),
        }
    }

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

    /// Whether any dimension is above `other`'s.
    pub fn exceeds(&self, other: Amounts) -> bool {
        Dim::ALL.iter().any(|&d| self.get(d) > other.get(d))
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
    /// No cap on any dimension.
    pub const NONE: Caps = Caps {
        qp: None,
        mr: None,
        mr_bytes: None,
    };

    pub fn get(&self, d: Dim) -> Option<u64> {
        match d {
            Dim::Qp => self.qp,
            Dim::Mr => self.mr,
            Dim::MrBytes => self.mr_bytes,
        }
    }

    /// The caps as a budget: `u64::MAX` where there is no cap.
    pub fn bound(&self) -> Amounts {
        Amounts {
            qp: self.qp.unwrap_or(u64::MAX),
            mr: self.mr.unwrap_or(u64::MAX),
            mr_bytes: self.mr_bytes.unwrap_or(u64::MAX),
        }
    }

    /// The caps as a floor: zero where there is no cap.
    pub fn or_zero(&self) -> Amounts {
        Amounts {
            qp: self.qp.unwrap_or(0),
            mr: self.mr.unwrap_or(0),
            mr_bytes: self.mr_bytes.unwrap_or(0),
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

    pub fn is_none(&self) -> bool {
        *self == Caps::NONE
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
        assert_eq!(
            caps.bound(),
            Amounts {
                qp: 10,
                mr: u64::MAX,
                mr_bytes: 5
            }
        );
    }

    #[test]
    fn mrs_fit_by_count_and_by_bytes() {
        let room = Amounts {
            qp: 0,
            mr: 10,
            mr_bytes: 10 << 20,
        };
        assert_eq!(room.fits(Resource::Mr, 3 << 20), 3);
        assert_eq!(room.fits(Resource::Mr, 0), 10);
        assert_eq!(room.fits(Resource::Qp, 0), 0);
        assert_eq!(
            Amounts::of(Resource::Mr, 2, 4096),
            Amounts {
                qp: 0,
                mr: 2,
                mr_bytes: 8192
            }
        );
        assert_eq!(
            Amounts::UNLIMITED.saturating_add(Amounts::qps(1)),
            Amounts::UNLIMITED
        );
    }
}
