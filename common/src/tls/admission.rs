//! Which connections a listener takes on, before and after the TLS handshake. Before it,
//! nobody is known, so slots are bounded per remote address and in total, with a pool of
//! their own for the cluster's members' addresses: a flood of silent connections from
//! anywhere else can delay no member. After it, the verified role decides: members have
//! their own pool, everyone else shares `max_connections`.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Identity, Role};

/// Connection limits of a listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections of anyone but members; more are closed after the handshake.
    pub max_connections: usize,
    /// Handshakes in progress at once from addresses other than members'.
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one such address.
    pub max_handshakes_per_address: usize,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// The members' addresses: their handshakes (up to `max_handshakes` more) and
    /// connections (up to `MEMBER_CONNECTIONS`) never wait on anyone else's.
    pub members: Vec<IpAddr>,
}

/// Open connections verified as members, at most (a few per peer; reconnects overlap).
const MEMBER_CONNECTIONS: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_handshakes: 1024,
            max_handshakes_per_address: 16,
            handshake_timeout: Duration::from_secs(3),
            members: Vec::new(),
        }
    }
}

impl Limits {
    /// For /metrics and /status: scrapers and operators are few, a handful of connections
    /// at a time is plenty.
    pub fn scrapers() -> Limits {
        Limits {
            max_connections: 64,
            max_handshakes: 64,
            max_handshakes_per_address: 8,
            ..Limits::default()
        }
    }
}

/// Why a connection was closed unserved.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// This address has `max_handshakes_per_address` handshakes in progress.
    AddressBusy,
    /// `max_handshakes` handshakes are in progress.
    Handshakes,
    /// `max_connections` (or the members' pool) are open.
    Connections,
}

/// Handshakes in progress per remote address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The listener's bookkeeping.
pub struct Admission {
    limits: Limits,
    members: HashSet<IpAddr>,
    handshakes: Arc<Semaphore>,
    member_handshakes: Arc<Semaphore>,
    per_address: PerAddress,
    connections: Arc<Semaphore>,
    member_connections: Arc<Semaphore>,
}

/// A handshake's slot; dropping it frees the slot (and the address's count).
pub struct Handshaking {
    _slot: OwnedSemaphorePermit,
    address: Option<(IpAddr, PerAddress)>,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        if let Some((ip, map)) = &self.address {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            members: limits.members.iter().copied().collect(),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            member_handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            per_address: Arc::default(),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            member_connections: Arc::new(Semaphore::new(MEMBER_CONNECTIONS)),
            limits,
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.limits.handshake_timeout
    }

    /// A slot for a handshake with `remote`, or why not.
    pub fn begin(&self, remote: IpAddr) -> Result<Handshaking, Refused> {
        if self.members.contains(&remote) {
            let slot = self
                .member_handshakes
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refused::Handshakes)?;
            return Ok(Handshaking {
                _slot: slot,
                address: None,
            });
        }
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&remote).copied().unwrap_or(0) >= self.limits.max_handshakes_per_address {
            return Err(Refused::AddressBusy);
        }
        let slot = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Handshakes)?;
        *map.entry(remote).or_insert(0) += 1;
        Ok(Handshaking {
            _slot: slot,
            address: Some((remote, self.per_address.clone())),
        })
    }

    /// A slot for the open connection of a verified peer (`identity`: None if its
    /// certificate names no rdmaq identity; it is refused call by call).
    pub fn open(&self, identity: Option<&Identity>) -> Result<OwnedSemaphorePermit, Refused> {
        let pool = match identity {
            Some(id) if id.role == Role::Member => &self.member_connections,
            _ => &self.connections,
        };
        pool.clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            max_handshakes: 3,
            max_handshakes_per_address: 2,
            members: vec![ip("10.0.0.1")],
            ..Limits::default()
        }
    }

    #[test]
    fn one_address_cannot_take_every_handshake_slot() {
        let a = Admission::new(limits());
        let held: Vec<_> = (0..2).map(|_| a.begin(ip("10.9.9.9")).unwrap()).collect();
        assert_eq!(a.begin(ip("10.9.9.9")).err(), Some(Refused::AddressBusy));
        // Another address still gets one; then the total is reached.
        let other = a.begin(ip("10.9.9.8")).unwrap();
        assert_eq!(a.begin(ip("10.9.9.7")).err(), Some(Refused::Handshakes));
        // A member's address has its own pool.
        let member: Vec<_> = (0..3).map(|_| a.begin(ip("10.0.0.1")).unwrap()).collect();
        drop((held, other, member));
        // Slots and per-address counts come back when handshakes end.
        assert!(a.per_address.lock().unwrap().is_empty());
        let again: Vec<_> = (0..2).map(|_| a.begin(ip("10.9.9.9")).unwrap()).collect();
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn members_connections_are_not_counted_with_everyone_elses() {
        let a = Admission::new(limits());
        let agent = Identity {
            role: Role::Agent,
            name: "n1".into(),
            subject: "agent:n1".into(),
            serial: "01".into(),
        };
        let member = Identity {
            role: Role::Member,
            name: "2".into(),
            subject: "member:2".into(),
            serial: "02".into(),
        };
        let open: Vec<_> = (0..2).map(|_| a.open(Some(&agent)).unwrap()).collect();
        assert_eq!(a.open(Some(&agent)).err(), Some(Refused::Connections));
        assert_eq!(a.open(None).err(), Some(Refused::Connections));
        assert!(a.open(Some(&member)).is_ok());
        drop(open);
        assert!(a.open(None).is_ok());
    }
}
