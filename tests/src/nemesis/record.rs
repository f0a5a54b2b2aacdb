//! What a nemesis run records: the program runs it launched and what they got, the kernel's
//! objects sampled on every node, the faults it injected, and the quota writes it made. The
//! checker (`check.rs`) reads only these. Times are offsets from the run's start, on the
//! host's monotonic clock (node clocks are stepped on purpose).

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use serde::Serialize;

/// A resource dimension the checker counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Dim {
    Qp,
    Mr,
}

impl Dim {
    pub const ALL: [Dim; 2] = [Dim::Qp, Dim::Mr];
}

/// One program run the workload launched.
#[derive(Debug, Clone, Serialize)]
pub struct Launch {
    pub run: u64,
    pub node: usize,
    pub tenant: String,
    /// Without the library (charged by the agent's eBPF view, never asked).
    pub bypass: bool,
    pub sent: Duration,
}

/// What a run asked for and got (from its own output).
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub run: u64,
    pub node: usize,
    pub tenant: String,
    pub bypass: bool,
    pub start: Duration,
    pub end: Duration,
    pub want: [u64; 2],
    pub got: [u64; 2],
    /// Why the first refused QP was refused, as the program saw it (e.g. `EDQUOT`).
    pub refusal: String,
}

impl Attempt {
    pub fn denied(&self) -> bool {
        self.got[0] < self.want[0] || self.got[1] < self.want[1]
    }
}

/// One node's kernel objects at one instant, attributed to the run that launched their
/// process (`None`: a process the nemesis did not launch).
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub objects: Vec<(Dim, Option<u64>)>,
    pub agent_up: bool,
}

/// Every node sampled at (about) the same instant.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub nodes: Vec<NodeSample>,
}

/// A fault, from injection to heal (`healed == injected` for instant ones).
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub kind: &'static str,
    pub target: String,
    pub injected: Duration,
    pub healed: Duration,
    /// The node whose agent cannot serve meanwhile (its agent killed, or it is cut off).
    pub node_out: Option<usize>,
}

/// A `rdmaq quota set` the nemesis ran.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaWrite {
    pub tenant: String,
    pub caps: [u64; 2],
    pub sent: Duration,
    pub done: Duration,
    /// The CLI reported success.
    pub acked: bool,
}

/// A caps read after the writes (`rdmaq quota get`).
#[derive(Debug, Clone, Serialize)]
pub struct QuotaRead {
    pub tenant: String,
    pub caps: [u64; 2],
    pub sent: Duration,
}

/// A process of rdmaq that ended without the nemesis killing it.
#[derive(Debug, Clone, Serialize)]
pub struct Crash {
    pub what: String,
    pub at: Duration,
    pub detail: String,
}

/// Everything recorded, shared by the workload, sampler and nemesis threads.
#[derive(Debug, Default)]
pub struct Journal {
    pub launches: Mutex<BTreeMap<u64, Launch>>,
    pub attempts: Mutex<Vec<Attempt>>,
    pub samples: Mutex<Vec<Sample>>,
    pub faults: Mutex<Vec<FaultEvent>>,
    pub writes: Mutex<Vec<QuotaWrite>>,
    pub reads: Mutex<Vec<QuotaRead>>,
    pub crashes: Mutex<Vec<Crash>>,
    /// rdmaq's own view (`views.rs`), for failure reports only.
    pub views: Mutex<Vec<(Duration, String)>>,
}

/// A snapshot of the journal for the checker.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub launches: BTreeMap<u64, Launch>,
    pub attempts: Vec<Attempt>,
    pub samples: Vec<Sample>,
    pub faults: Vec<FaultEvent>,
    pub writes: Vec<QuotaWrite>,
    pub reads: Vec<QuotaRead>,
    pub crashes: Vec<Crash>,
    pub views: Vec<(Duration, String)>,
    /// Each tenant's caps before the first write.
    pub initial_caps: BTreeMap<String, [u64; 2]>,
}

impl Journal {
    pub fn records(&self, initial_caps: BTreeMap<String, [u64; 2]>) -> Records {
        Records {
            launches: self.launches.lock().unwrap().clone(),
            attempts: self.attempts.lock().unwrap().clone(),
            samples: self.samples.lock().unwrap().clone(),
            faults: self.faults.lock().unwrap().clone(),
            writes: self.writes.lock().unwrap().clone(),
            reads: self.reads.lock().unwrap().clone(),
            crashes: self.crashes.lock().unwrap().clone(),
            views: self.views.lock().unwrap().clone(),
            initial_caps,
        }
    }
}
