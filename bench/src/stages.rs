//! Where a grant's time went: the coordinator's per-stage write times
//! (`rdmaq_write_stage_seconds{stage}`, coordinator/src/stages.rs), scraped from each member
//! before and after a benchmark point and turned into the mean time per observation.

use std::net::SocketAddr;

use serde::Serialize;

/// The stages a member times, in the order a grant meets them.
pub const STAGES: [&str; 7] = [
    "serve",
    "queue",
    "write",
    "forward",
    "append",
    "save_committed",
    "apply",
];

/// One member's histogram counts and sums, per stage of `STAGES`.
#[derive(Debug, Clone, Default)]
pub struct Reading(Vec<(f64, f64)>);

/// Reads member `metrics`' stage histograms.
pub fn scrape(metrics: SocketAddr) -> Reading {
    let body = rdmaq_lab::http::get(metrics, "/metrics");
    let of = |what: &str, stage: &str| {
        rdmaq_lab::http::sample(
            &body,
            &format!("rdmaq_write_stage_seconds_{what}{{stage=\"{stage}\"}}"),
        )
        .unwrap_or(0.0)
    };
    Reading(
        STAGES
            .iter()
            .map(|s| (of("count", s), of("sum", s)))
            .collect(),
    )
}

/// A stage's observations on one member between two readings.
#[derive(Debug, Clone, Serialize)]
pub struct StageTime {
    pub member: u64,
    pub leader: bool,
    pub stage: &'static str,
    pub count: u64,
    pub mean_ms: f64,
}

/// What member `member` observed between `before` and `after` (stages with none left out).
pub fn between(member: u64, leader: bool, before: &Reading, after: &Reading) -> Vec<StageTime> {
    STAGES
        .iter()
        .zip(before.0.iter().zip(&after.0))
        .filter_map(|(stage, ((c0, s0), (c1, s1)))| {
            let count = c1 - c0;
            (count > 0.0).then(|| StageTime {
                member,
                leader,
                stage,
                count: count as u64,
                mean_ms: (s1 - s0) / count * 1000.0,
            })
        })
        .collect()
}

/// One line per member: `member 2 (leader): serve 2.05 ms ×2400, queue 0.03 ms ×2400, …`.
pub fn describe(times: &[StageTime]) -> String {
    let mut members: Vec<(u64, bool)> = times.iter().map(|t| (t.member, t.leader)).collect();
    members.dedup();
    members
        .iter()
        .map(|(m, leader)| {
            let stages: Vec<String> = times
                .iter()
                .filter(|t| t.member == *m)
                .map(|t| format!("{} {:.3} ms ×{}", t.stage, t.mean_ms, t.count))
                .collect();
            let role = if *leader { " (leader)" } else { "" };
            format!("    member {m}{role}: {}", stages.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every member's reading, member 1's first.
pub fn scrape_all(metrics: &[SocketAddr]) -> Vec<Reading> {
    metrics.iter().map(|m| scrape(*m)).collect()
}

/// What every member observed since `before` (`scrape_all`), member `leader` marked.
pub fn since(metrics: &[SocketAddr], leader: u64, before: &[Reading]) -> Vec<StageTime> {
    (1..)
        .zip(metrics)
        .zip(before)
        .flat_map(|((id, m), before)| between(id, id == leader, before, &scrape(*m)))
        .collect()
}
