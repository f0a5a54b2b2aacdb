//! Where a write's time goes on this member, stage by stage, as one histogram family
//! (`rdmaq_write_stage_seconds{stage}`): a grant's latency split into the parts this member
//! sees, so that a benchmark can tell the disk from the batching from the consensus.
//!
//! - `serve`: an agent's Acquire from decoded request to reply (everything below);
//! - `queue`: a proposal waiting for its batch to close (a slot among the batches in
//!   flight, the batcher's linger);
//! - `write`: a batch from proposing it to its replies (`append`, replication to a quorum,
//!   `save_committed`, `apply`, or `forward` on a follower);
//! - `forward`: a follower's batch sent to the leader and answered;
//! - `append`: one log append, fsync included (every member);
//! - `save_committed`: writing the committed index, fsync included (every member);
//! - `apply`: applying committed entries to the state, its lock included (every member).

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stage {
    stage: &'static str,
}

/// 10 µs to about 5 s, doubling.
fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 20))
}

/// The stages' histograms; clones share them.
#[derive(Clone, Debug)]
pub struct Stages {
    family: Family<Stage, Histogram, fn() -> Histogram>,
    pub serve: Histogram,
    pub queue: Histogram,
    pub write: Histogram,
    pub forward: Histogram,
    pub append: Histogram,
    pub save_committed: Histogram,
    pub apply: Histogram,
}

impl Default for Stages {
    fn default() -> Self {
        let family = Family::<Stage, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let of = |stage| family.get_or_create(&Stage { stage }).clone();
        Stages {
            serve: of("serve"),
            queue: of("queue"),
            write: of("write"),
            forward: of("forward"),
            append: of("append"),
            save_committed: of("save_committed"),
            apply: of("apply"),
            family,
        }
    }
}

impl Stages {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rdmaq_write_stage_seconds",
            "Time a write spent in each stage on this member (see coordinator/src/stages.rs)",
            self.family.clone(),
        );
    }
}

/// Observes the time since `start` in `stage`.
pub fn since(stage: &Histogram, start: Instant) {
    stage.observe(start.elapsed().as_secs_f64());
}
