//! The process's cache of tokens pre-admitted by the agent (agent mode): a creation takes a
//! token instead of a round trip; a round trip asks for a few ahead of demand; a destroy
//! gives its token back to the cache, and the cache returns what it should not keep. Tokens
//! held are charged to the tenant, so the cache keeps few. Pure: what to send to the agent
//! is returned to the caller.

use rdmaq_model::Resource;

/// Unused tokens kept for later creations before the surplus goes back to the agent: at
/// most this many, and no more than the process has objects of that kind alive (at least
/// one, so that create/destroy cycles need no round trip).
pub const KEEP: u32 = 8;

/// Tokens asked for ahead of demand on each round trip.
pub const PREFETCH: u32 = 4;

/// Tokens to give back to the agent: `count` objects, `bytes` of MR budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Surplus {
    pub count: u32,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TokenCache {
    qp: u32,
    mr: u32,
    /// MR bytes held with the MR tokens.
    bytes: u64,
}

fn keep(live: usize) -> u32 {
    KEEP.min(u32::try_from(live).unwrap_or(u32::MAX)).max(1)
}

impl TokenCache {
    /// Uses a cached token for one object of `resource` pinning `bytes`, if there is one.
    pub fn take(&mut self, resource: Resource, bytes: u64) -> bool {
        match resource {
            Resource::Qp if self.qp > 0 => {
                self.qp -= 1;
                true
            }
            Resource::Mr if self.mr > 0 && self.bytes >= bytes => {
                self.mr -= 1;
                self.bytes -= bytes;
                true
            }
            _ => false,
        }
    }

    /// The agent granted `count` tokens and `granted_bytes` for a creation of `bytes`: one
    /// token (and `bytes`) is for that creation, the rest is cached.
    pub fn granted(&mut self, resource: Resource, count: u32, granted_bytes: u64, bytes: u64) {
        match resource {
            Resource::Qp => self.qp += count.saturating_sub(1),
            Resource::Mr => {
                self.mr += count.saturating_sub(1);
                self.bytes += granted_bytes.saturating_sub(bytes);
            }
        }
    }

    /// An object of `resource` pinning `bytes` was destroyed (or its creation failed), and
    /// `live` of that kind remain: its token comes back here, and what is more than the
    /// cache keeps is returned.
    pub fn returned(&mut self, resource: Resource, bytes: u64, live: usize) -> Option<Surplus> {
        let keep = keep(live);
        match resource {
            Resource::Qp => {
                self.qp += 1;
                (self.qp > keep).then(|| {
                    let count = self.qp - keep;
                    self.qp = keep;
                    Surplus { count, bytes: 0 }
                })
            }
            Resource::Mr => {
                self.mr += 1;
                self.bytes += bytes;
                (self.mr > keep).then(|| {
                    // Kept tokens keep the bytes of the MR just released each, so that an MR
                    // of the same size can be registered again without a round trip.
                    let count = self.mr - keep;
                    self.mr = keep;
                    let kept_bytes = bytes.saturating_mul(u64::from(keep)).min(self.bytes);
                    let spare = self.bytes - kept_bytes;
                    self.bytes = kept_bytes;
                    Surplus {
                        count,
                        bytes: spare,
                    }
                })
            }
        }
    }

    /// Empties the cache of `resource`: what it held, if anything.
    pub fn drain_one(&mut self, resource: Resource) -> Option<Surplus> {
        let s = match resource {
            Resource::Qp => Surplus {
                count: std::mem::take(&mut self.qp),
                bytes: 0,
            },
            Resource::Mr => Surplus {
                count: std::mem::take(&mut self.mr),
                bytes: std::mem::take(&mut self.bytes),
            },
        };
        (s != Surplus::default()).then_some(s)
    }

    /// Empties the cache (at exit, or when a new agent connection replaces the tokens of
    /// the old one): what it held, per resource.
    pub fn drain(&mut self) -> [(Resource, Surplus); 2] {
        let t = std::mem::take(self);
        [
            (
                Resource::Qp,
                Surplus {
                    count: t.qp,
                    bytes: 0,
                },
            ),
            (
                Resource::Mr,
                Surplus {
                    count: t.mr,
                    bytes: t.bytes,
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_caches_all_but_the_token_in_use() {
        let mut c = TokenCache::default();
        assert!(!c.take(Resource::Qp, 0), "empty at first");
        c.granted(Resource::Qp, 4, 0, 0);
        for _ in 0..3 {
            assert!(c.take(Resource::Qp, 0));
        }
        assert!(!c.take(Resource::Qp, 0), "three cached, three used");
        // A refusal's zero grant caches nothing (and does not underflow).
        c.granted(Resource::Qp, 0, 0, 0);
        assert!(!c.take(Resource::Qp, 0));
    }

    #[test]
    fn mr_tokens_need_the_bytes_too() {
        let mut c = TokenCache::default();
        // 3 MRs of 1 MiB granted for a 1 MiB registration: 2 tokens, 2 MiB cached.
        c.granted(Resource::Mr, 3, 3 << 20, 1 << 20);
        assert!(
            !c.take(Resource::Mr, 3 << 20),
            "a token, but not enough bytes"
        );
        assert!(c.take(Resource::Mr, 1 << 20));
        assert!(c.take(Resource::Mr, 1 << 20));
        assert!(!c.take(Resource::Mr, 0), "no tokens left");
    }

    #[test]
    fn the_cache_keeps_no_more_than_the_live_objects_and_at_most_eight() {
        let mut c = TokenCache::default();
        // One QP alive, one destroyed: the destroyed one's token is kept (one live object
        // keeps one), nothing goes back.
        assert_eq!(c.returned(Resource::Qp, 0, 1), None);
        // The last one destroyed with one token cached: one kept, one back.
        assert_eq!(
            c.returned(Resource::Qp, 0, 0),
            Some(Surplus { count: 1, bytes: 0 })
        );
        // Twenty cached, and one more destroyed while 100 are alive: eight are kept.
        c.granted(Resource::Qp, 20, 0, 0);
        assert_eq!(
            c.returned(Resource::Qp, 0, 100),
            Some(Surplus {
                count: 13,
                bytes: 0
            })
        );
    }

    #[test]
    fn kept_mr_tokens_keep_the_released_size_each_and_return_the_rest() {
        let mut c = TokenCache::default();
        c.granted(Resource::Mr, 4, 40 << 20, 10 << 20);
        // 3 tokens and 30 MiB cached; a 10 MiB MR is released with 2 still alive: 4 tokens,
        // 2 kept with 10 MiB each, 2 go back with the other 20 MiB.
        assert_eq!(
            c.returned(Resource::Mr, 10 << 20, 2),
            Some(Surplus {
                count: 2,
                bytes: 20 << 20
            })
        );
        assert!(c.take(Resource::Mr, 10 << 20) && c.take(Resource::Mr, 10 << 20));
        assert!(!c.take(Resource::Mr, 1));
    }

    #[test]
    fn one_resource_can_be_emptied_alone() {
        let mut c = TokenCache::default();
        c.granted(Resource::Qp, 3, 0, 0);
        c.granted(Resource::Mr, 2, 8192, 4096);
        assert_eq!(
            c.drain_one(Resource::Qp),
            Some(Surplus { count: 2, bytes: 0 })
        );
        assert_eq!(c.drain_one(Resource::Qp), None);
        assert!(c.take(Resource::Mr, 4096), "the MR tokens stay");
    }

    #[test]
    fn drain_returns_everything_once() {
        let mut c = TokenCache::default();
        c.granted(Resource::Qp, 3, 0, 0);
        c.granted(Resource::Mr, 2, 8192, 4096);
        assert_eq!(
            c.drain(),
            [
                (Resource::Qp, Surplus { count: 2, bytes: 0 }),
                (
                    Resource::Mr,
                    Surplus {
                        count: 1,
                        bytes: 4096
                    }
                )
            ]
        );
        assert_eq!(c, TokenCache::default());
    }
}
