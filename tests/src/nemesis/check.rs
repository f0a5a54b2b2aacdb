//! The checker: reads only what the nemesis recorded (kernel samples, its own launch
//! records, the quota writes it made and what they answered) and judges the run.
//!
//! - **over the cap**: at a sampled instant, the objects the library admitted for a tenant
//!   across all nodes exceed the highest cap possibly in force (allowing agents `lag` to
//!   hear of a change), unless they are objects of programs launched before a lowering took
//!   effect; or, once objects created without the library are charged (`bypass_grace`, the
//!   agent cannot refuse them, only count them), what was admitted after that does not fit
//!   beside them;
//! - **lost write**: a quota read shows caps no write could have left in force;
//! - **stranded budget**: a tenant's programs on a node kept being denied, for longer than
//!   `strand_bound`, while every sample showed the tenant with room for their requests
//!   (denials on a node whose agent was killed or which was cut off, or while every member
//!   restarts, fail closed by design and are only counted; an episode does not span such an
//!   outage, `out_during`);
//! - **crash**: an rdmaq process ended without the nemesis killing it.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use super::{
    caps::CapHistory,
    record::{Attempt, Dim, Records, Sample},
};

#[derive(Debug, Clone)]
pub struct Bounds {
    /// How long agents may take to hear of a quota change.
    pub lag: Duration,
    /// How long an object created without the library may go uncharged.
    pub bypass_grace: Duration,
    /// How long a restarted agent takes to see the kernel's objects again (its eBPF
    /// monitor attached and the resource dump read).
    pub agent_start: Duration,
    /// The documented bound on stranded budget.
    pub strand_bound: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub samples: usize,
    pub over_cap_instants: usize,
    pub over_cap: Vec<String>,
    pub unattributed_instants: usize,
    pub lost_writes: Vec<String>,
    pub denials: usize,
    pub denials_on_a_node_out: usize,
    /// The longest a tenant's programs on a node kept being denied with room for them.
    pub worst_stranded_secs: f64,
    pub worst_stranded: String,
    pub stranded: Vec<String>,
    /// The longest from a fault to the first program run started after it that got all
    /// it asked for, anywhere.
    pub worst_fault_to_admission_secs: f64,
    pub crashes: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.over_cap_instants == 0
            && self.unattributed_instants == 0
            && self.lost_writes.is_empty()
            && self.stranded.is_empty()
            && self.crashes.is_empty()
    }
}

/// Kept in failure lists: enough to see what happened, not the whole run.
const SHOWN: usize = 20;

pub fn check(r: &Records, b: &Bounds) -> Verdict {
    let mut v = Verdict {
        samples: r.samples.len(),
        ..Verdict::default()
    };
    let histories: BTreeMap<&str, CapHistory<'_>> = r
        .initial_caps
        .iter()
        .map(|(t, caps)| (t.as_str(), CapHistory::new(t, *caps, &r.writes)))
        .collect();
    over_cap(r, b, &histories, &mut v);
    lost_writes(r, &histories, &mut v);
    stranded(r, b, &histories, &mut v);
    fault_to_admission(r, &mut v);
    v.crashes = r
        .crashes
        .iter()
        .map(|c| format!("{:.1}s {}: {}", c.at.as_secs_f64(), c.what, c.detail))
        .collect();
    v
}

/// The runs owning each of a tenant's objects of `dim` in one sample, across nodes.
fn objects_of<'r>(
    r: &'r Records,
    s: &'r Sample,
    tenant: &'r str,
    dim: Dim,
) -> impl Iterator<Item = u64> + 'r {
    s.nodes
        .iter()
        .flat_map(|n| &n.objects)
        .filter(move |(d, _)| *d == dim)
        .filter_map(|(_, run)| *run)
        .filter(move |run| r.launches.get(run).is_some_and(|l| l.tenant == tenant))
}

/// When the objects of `run` (made without the library) are charged at the latest: its
/// node's agent sees them within `bypass_grace`, unless the agent was down or the node cut
/// off meanwhile; then once it is back.
fn charged_at(r: &Records, b: &Bounds, run: u64) -> Duration {
    let l = &r.launches[&run];
    let mut at = l.sent + b.bypass_grace;
    for f in r.faults.iter().filter(|f| f.node_out == Some(l.node)) {
        let back = f.healed + recovery(b, f);
        if f.injected < at && back > l.sent {
            at = at.max(back + b.bypass_grace);
        }
    }
    at
}

/// How long after a node-out fault healed its agent serves as before.
fn recovery(b: &Bounds, f: &super::record::FaultEvent) -> Duration {
    if f.kind == "kill-agent" {
        b.agent_start
    } else {
        b.lag
    }
}

/// A tenant's objects of `dim` in one sample, across nodes, of runs `only` accepts.
fn count(r: &Records, s: &Sample, tenant: &str, dim: Dim, only: impl Fn(u64) -> bool) -> u64 {
    objects_of(r, s, tenant, dim)
        .filter(|run| only(*run))
        .count() as u64
}

fn over_cap(r: &Records, b: &Bounds, h: &BTreeMap<&str, CapHistory<'_>>, v: &mut Verdict) {
    for s in &r.samples {
        if s.nodes
            .iter()
            .flat_map(|n| &n.objects)
            .any(|(_, run)| run.is_none())
        {
            v.unattributed_instants += 1;
        }
        let mut over = false;
        for (tenant, hist) in h {
            for dim in Dim::ALL {
                let cap = hist.highest(s.at, b.lag, dim);
                let allowed = hist.last_lowered(s.at, dim).map_or(cap, |lowered| {
                    cap.max(count(r, s, tenant, dim, |run| {
                        r.launches[&run].sent <= lowered + b.lag
                    }))
                });
                let bypass = |run: u64| r.launches[&run].bypass;
                // What the library admitted never exceeds the cap.
                let admitted = count(r, s, tenant, dim, |run| !bypass(run));
                // Objects created without the library are charged once the agent has seen
                // and reported them (`bypass_grace`) and everyone has heard (`lag`); what
                // was admitted after that fits beside them.
                let charged: Vec<u64> = objects_of(r, s, tenant, dim)
                    .filter(|run| bypass(*run) && charged_at(r, b, *run) <= s.at)
                    .collect();
                let since = charged
                    .iter()
                    .map(|run| charged_at(r, b, *run) + b.lag)
                    .max();
                let admitted_since = since.map_or(0, |since| {
                    count(r, s, tenant, dim, |run| {
                        !bypass(run) && r.launches[&run].sent > since
                    })
                });
                let beside = admitted_since + charged.len() as u64;
                if admitted > allowed || beside > allowed {
                    over = true;
                    if v.over_cap.len() < SHOWN {
                        v.over_cap.push(format!(
                            "{:.1}s {tenant} {dim:?}: {admitted} admitted, {beside} admitted \
                             beside {} charged without the library; allowed {allowed} \
                             (cap {cap}); rdmaq's view then: {}",
                            s.at.as_secs_f64(),
                            charged.len(),
                            view_at(r, s.at)
                        ));
                    }
                }
            }
        }
        v.over_cap_instants += usize::from(over);
    }
}

fn lost_writes(r: &Records, h: &BTreeMap<&str, CapHistory<'_>>, v: &mut Verdict) {
    for read in &r.reads {
        let Some(hist) = h.get(read.tenant.as_str()) else {
            continue;
        };
        for dim in Dim::ALL {
            let possible = hist.possible(read.sent, dim);
            if !possible.contains(&read.caps[dim as usize]) {
                v.lost_writes.push(format!(
                    "{:.1}s {} {dim:?}: read {}, but only {possible:?} could be in force",
                    read.sent.as_secs_f64(),
                    read.tenant,
                    read.caps[dim as usize]
                ));
            }
        }
    }
}

/// Stranded budget, per tenant and node: an episode starts with a denial while every
/// sample around it showed the tenant with room for the whole request, goes on while the
/// node's next runs of the tenant are denied with room, and ends with a run that gets what
/// it asked for (or a denial without room). Its length, from the first denied run's start to
/// the last one's end, must stay within the bound.
fn stranded(r: &Records, b: &Bounds, h: &BTreeMap<&str, CapHistory<'_>>, v: &mut Verdict) {
    let mut runs: BTreeMap<(&str, usize), Vec<&Attempt>> = BTreeMap::new();
    for a in r.attempts.iter().filter(|a| !a.bypass) {
        runs.entry((a.tenant.as_str(), a.node)).or_default().push(a);
    }
    for ((tenant, node), mut list) in runs {
        let Some(hist) = h.get(tenant) else { continue };
        list.sort_by_key(|a| a.start);
        let mut episode: Option<(Duration, Duration, &str)> = None;
        let close = |episode: &mut Option<(Duration, Duration, &str)>, v: &mut Verdict| {
            if let Some((first, last, refusal)) = episode.take() {
                let length = last.saturating_sub(first);
                let what = format!(
                    "node{node} {tenant}: denied with room from {:.1}s for {:.1}s \
                     (first refusal: {refusal}); the kernel's {tenant} objects (QPs/MRs) at \
                     its start: {}; at its end: {}; rdmaq's view at its start: {}; at its end: {}",
                    first.as_secs_f64(),
                    length.as_secs_f64(),
                    kernel_at(r, tenant, first),
                    kernel_at(r, tenant, last),
                    view_at(r, first),
                    view_at(r, last)
                );
                if length.as_secs_f64() > v.worst_stranded_secs {
                    v.worst_stranded_secs = length.as_secs_f64();
                    v.worst_stranded = what.clone();
                }
                if length > b.strand_bound && v.stranded.len() < SHOWN {
                    v.stranded.push(what);
                }
            }
        };
        for a in list {
            if !a.denied() {
                close(&mut episode, v);
                continue;
            }
            v.denials += 1;
            if node_out(r, b, a) {
                v.denials_on_a_node_out += 1;
                close(&mut episode, v);
                continue;
            }
            if !room_throughout(r, b, hist, a) {
                close(&mut episode, v);
                continue;
            }
            // An episode does not span an outage of its node: what was denied after it
            // starts a new one.
            if let Some((_, last, _)) = episode
                && out_during(r, b, node, last, a.start)
            {
                close(&mut episode, v);
            }
            episode = Some(match episode {
                Some((first, _, refusal)) => (first, a.end, refusal),
                None => (a.start, a.end, a.refusal.as_str()),
            });
        }
        close(&mut episode, v);
    }
}

/// rdmaq's own view nearest to `t` (diagnosis only).
fn view_at(r: &Records, t: Duration) -> &str {
    r.views
        .iter()
        .min_by_key(|(at, _)| at.abs_diff(t))
        .map_or("none recorded", |(_, v)| v.as_str())
}

/// Whether `a`'s node could not serve while it ran (or just before): `out_during`, or a
/// sample in it found the node's agent down.
fn node_out(r: &Records, b: &Bounds, a: &Attempt) -> bool {
    out_during(r, b, a.node, a.start, a.end)
        || r.samples
            .iter()
            .any(|s| s.at >= a.start && s.at <= a.end && !s.nodes[a.node - 1].agent_up)
}

/// Whether `node` was out at some time from `from` to `to`: its agent killed (until a
/// restarted agent had `agent_start` to register and see the kernel), the node cut off (back
/// on the network, an agent renews within `lag`), or every member restarting at once (no
/// node can acquire). A denial then is the fault's doing, not budget stranded by rdmaq.
fn out_during(r: &Records, b: &Bounds, node: usize, from: Duration, to: Duration) -> bool {
    r.faults.iter().any(|f| {
        (f.node_out == Some(node) || f.kind == "full-restart")
            && f.injected <= to
            && f.healed + recovery(b, f) >= from
    })
}

/// Whether every sample from the last one before `a` started to its end showed room for
/// all that `a` was denied.
fn room_throughout(r: &Records, b: &Bounds, hist: &CapHistory<'_>, a: &Attempt) -> bool {
    let from = r.samples.iter().rposition(|s| s.at <= a.start).unwrap_or(0);
    let during: Vec<&Sample> = r.samples[from..]
        .iter()
        .take_while(|s| s.at <= a.end)
        .collect();
    !during.is_empty()
        && during.iter().all(|s| {
            Dim::ALL.iter().all(|&dim| {
                let d = dim as usize;
                a.got[d] >= a.want[d]
                    || charged_count(r, b, s, &a.tenant, dim, a.run) + a.want[d]
                        <= hist.lowest(s.at, b.lag, dim)
            })
        })
}

/// What the coordinator may rightly still charge a tenant at sample `s` (besides run
/// `except`): every node's objects, and for a node that is out (its agent down, or cut off)
/// at least the most it held in the heartbeat before it went out — its last report stays
/// charged until it reports again (after a restart, until it sees the kernel).
fn charged_count(r: &Records, b: &Bounds, s: &Sample, tenant: &str, dim: Dim, except: u64) -> u64 {
    let on = |s: &Sample, node: usize| held_on(r, s, node, tenant, dim, except);
    (0..s.nodes.len())
        .map(|node| {
            let went_out = r
                .faults
                .iter()
                .filter(|f| {
                    f.node_out == Some(node + 1)
                        && f.injected <= s.at
                        && s.at <= f.healed + recovery(b, f)
                })
                .map(|f| f.injected)
                .min();
            // Its last report may predate the last sample by a heartbeat and a round trip.
            let before = went_out.map_or(0, |t| {
                r.samples
                    .iter()
                    .filter(|x| x.at < t && x.at + 2 * b.lag >= t)
                    .map(|x| on(x, node))
                    .max()
                    .unwrap_or(0)
            });
            on(s, node).max(before)
        })
        .sum()
}

/// The objects the kernel showed at sample `s` on `node` for `tenant`'s programs (but run
/// `except`).
fn held_on(r: &Records, s: &Sample, node: usize, tenant: &str, dim: Dim, except: u64) -> u64 {
    s.nodes[node]
        .objects
        .iter()
        .filter(|(d, run)| {
            *d == dim
                && run.is_some_and(|run| {
                    run != except && r.launches.get(&run).is_some_and(|l| l.tenant == tenant)
                })
        })
        .count() as u64
}

/// The checker's own count of `tenant`'s objects per node at the sample nearest `t`
/// (diagnosis: set beside rdmaq's view).
fn kernel_at(r: &Records, tenant: &str, t: Duration) -> String {
    let Some(s) = r.samples.iter().min_by_key(|s| s.at.abs_diff(t)) else {
        return "no sample".into();
    };
    (0..s.nodes.len())
        .map(|node| {
            format!(
                "node{} {}/{}",
                node + 1,
                held_on(r, s, node, tenant, Dim::Qp, u64::MAX),
                held_on(r, s, node, tenant, Dim::Mr, u64::MAX)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn fault_to_admission(r: &Records, v: &mut Verdict) {
    for f in &r.faults {
        let first = r
            .attempts
            .iter()
            .filter(|a| !a.bypass && !a.denied() && a.start >= f.injected)
            .map(|a| a.end)
            .min();
        if let Some(end) = first {
            v.worst_fault_to_admission_secs = v
                .worst_fault_to_admission_secs
                .max((end - f.injected).as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::record::{FaultEvent, Launch, NodeSample, QuotaRead, QuotaWrite};

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn bounds() -> Bounds {
        Bounds {
            lag: S(3),
            bypass_grace: S(5),
            agent_start: S(40),
            strand_bound: S(20),
        }
    }

    /// One tenant "t" with caps [4 QPs, 4 MRs]; run `i` launched at second `i` on node 1.
    fn records(runs: u64) -> Records {
        Records {
            launches: (0..runs)
                .map(|i| {
                    let l = Launch {
                        run: i,
                        node: 1,
                        tenant: "t".into(),
                        bypass: false,
                        sent: S(i),
                    };
                    (i, l)
                })
                .collect(),
            initial_caps: [("t".to_string(), [4, 4])].into(),
            ..Records::default()
        }
    }

    fn sample(at: u64, qps_of_runs: &[u64]) -> Sample {
        Sample {
            at: S(at),
            nodes: vec![NodeSample {
                objects: qps_of_runs.iter().map(|r| (Dim::Qp, Some(*r))).collect(),
                agent_up: true,
            }],
        }
    }

    /// Run `run` of tenant "t" on node 1, from `start` for 1 s, wanting 2 QPs and getting
    /// `got`.
    fn attempt(run: u64, start: u64, got: u64) -> Attempt {
        Attempt {
            run,
            node: 1,
            tenant: "t".into(),
            bypass: false,
            start: S(start),
            end: S(start + 1),
            want: [2, 0],
            got: [got, 0],
            refusal: "122 EDQUOT".into(),
        }
    }

    #[test]
    fn an_instant_over_the_cap_fails_and_one_at_it_does_not() {
        let mut r = records(2);
        r.samples = vec![sample(10, &[0, 0, 1, 1]), sample(11, &[0, 0, 1, 1, 1])];
        let v = check(&r, &bounds());
        assert_eq!(v.over_cap_instants, 1, "{v:?}");
        assert!(!v.passed());
    }

    #[test]
    fn objects_from_before_a_lowering_are_allowed_new_ones_are_not() {
        let mut r = records(30);
        r.writes = vec![QuotaWrite {
            tenant: "t".into(),
            caps: [2, 4],
            sent: S(10),
            done: S(11),
            acked: true,
        }];
        // Runs 0 and 1 (launched before the lowering) hold 4: allowed.
        r.samples = vec![sample(20, &[0, 0, 1, 1])];
        assert!(check(&r, &bounds()).passed());
        // Run 20 (launched after it took effect) adds one: over.
        r.samples = vec![sample(21, &[0, 0, 1, 20])];
        assert_eq!(check(&r, &bounds()).over_cap_instants, 1);
        // Below the new cap, new runs may hold up to it.
        r.samples = vec![sample(25, &[20, 21])];
        assert!(check(&r, &bounds()).passed());
    }

    #[test]
    fn denials_with_room_for_longer_than_the_bound_are_stranded_budget() {
        let mut r = records(60);
        r.samples = (0..60).map(|t| sample(t, &[0])).collect();
        // Denied from 5 s to 16 s, then admitted: 11 s stranded, within the bound.
        r.attempts = vec![
            attempt(1, 5, 0),
            attempt(2, 10, 1),
            attempt(3, 15, 0),
            attempt(4, 20, 2),
        ];
        let v = check(&r, &bounds());
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.worst_stranded_secs, v.denials), (11.0, 3));
        // Denied from 25 s to 51 s: over it.
        r.attempts
            .extend([attempt(5, 25, 0), attempt(6, 40, 0), attempt(7, 50, 1)]);
        let v = check(&r, &bounds());
        assert_eq!(v.stranded.len(), 1, "{v:?}");
        // Without room (the tenant holds 3 of 4), a denial is no stranding.
        for s in &mut r.samples[24..52] {
            s.nodes[0].objects = vec![(Dim::Qp, Some(0)); 3];
        }
        assert!(check(&r, &bounds()).passed());
        // Nor on a node whose agent was down.
        for s in &mut r.samples[24..52] {
            s.nodes[0].objects = vec![(Dim::Qp, Some(0))];
        }
        r.samples[40].nodes[0].agent_up = false;
        let v = check(&r, &bounds());
        assert!(v.passed() && v.denials_on_a_node_out == 1, "{v:?}");
    }

    #[test]
    fn a_stranding_episode_does_not_span_an_outage_of_its_node() {
        let mut r = records(120);
        r.samples = (0..120).map(|t| sample(t, &[0])).collect();
        let run = |run: u64, start: u64| attempt(run, start, 0);
        let fault = |kind: &'static str, node_out: Option<usize>, at: u64| FaultEvent {
            kind,
            target: String::new(),
            injected: S(at),
            healed: S(at + 2),
            node_out,
        };
        // Denied at 5 s and 30 s: 26 s, over the bound of 20.
        r.attempts = vec![run(1, 5), run(2, 30)];
        assert_eq!(check(&r, &bounds()).stranded.len(), 1);
        // With the node's agent killed in between (and no run meanwhile): two episodes.
        r.faults = vec![fault("kill-agent", Some(1), 10)];
        r.attempts = vec![run(1, 5), run(2, 60)];
        let v = check(&r, &bounds());
        assert!(v.passed() && v.worst_stranded_secs == 1.0, "{v:?}");
        // A run within `agent_start` of the agent's restart is the fault's, not stranding.
        r.attempts = vec![run(1, 40)];
        assert_eq!(check(&r, &bounds()).denials_on_a_node_out, 1);
        // Nor is a denial while every member restarts, on any node; the episode splits there.
        r.faults = vec![fault("full-restart", None, 10)];
        r.attempts = vec![run(1, 5), run(2, 11), run(3, 30)];
        let v = check(&r, &bounds());
        assert!(v.passed() && v.denials_on_a_node_out == 1, "{v:?}");
        // Another node's outage does not split it.
        r.faults = vec![fault("kill-agent", Some(2), 10)];
        r.attempts = vec![run(1, 5), run(2, 30)];
        assert_eq!(check(&r, &bounds()).stranded.len(), 1);
    }

    #[test]
    fn a_read_no_write_explains_is_a_lost_write() {
        let mut r = records(0);
        r.writes = vec![QuotaWrite {
            tenant: "t".into(),
            caps: [7, 7],
            sent: S(1),
            done: S(2),
            acked: true,
        }];
        r.reads = vec![QuotaRead {
            tenant: "t".into(),
            caps: [4, 4],
            sent: S(5),
        }];
        assert_eq!(check(&r, &bounds()).lost_writes.len(), 2);
        r.reads[0].caps = [7, 7];
        assert!(check(&r, &bounds()).passed());
    }

    #[test]
    fn objects_without_the_library_count_once_charged() {
        let mut r = records(12);
        r.launches.get_mut(&0).unwrap().bypass = true;
        // Run 1 was admitted 4 QPs (the cap) before run 0's 2, made without the library,
        // were charged: over the cap, but nothing rdmaq could have refused.
        r.samples = vec![sample(9, &[0, 0, 1, 1, 1, 1])];
        assert!(check(&r, &bounds()).passed());
        // Run 10, admitted after the charge, must fit beside them: 2 + 3 > 4.
        r.samples = vec![sample(12, &[0, 0, 10, 10, 10])];
        assert_eq!(check(&r, &bounds()).over_cap_instants, 1);
        r.samples = vec![sample(12, &[0, 0, 10, 10])];
        assert!(check(&r, &bounds()).passed());
    }

    #[test]
    fn objects_of_unknown_processes_fail_the_run() {
        let mut r = records(1);
        let mut s = sample(3, &[0]);
        s.nodes[0].objects.push((Dim::Mr, None));
        r.samples = vec![s];
        assert_eq!(check(&r, &bounds()).unattributed_instants, 1);
    }
}
