//! The kernel's live RDMA objects per process, as the eBPF monitor reports them: the view
//! the backstop reconciles with the ledger, and a restarted agent's claims are bounded by.
//! Pure: events and resource dumps in, counts out.

use std::collections::{HashMap, HashSet};

use rdmaq_ebpf_common::{Counts, Event, kind};
use rdmaq_model::Amounts;

/// What the kernel holds, per process (tgid).
pub type KernelView = HashMap<u32, Counts>;

/// The event's name, for metrics and logs.
pub fn event_name(ev: &Event) -> &'static str {
    match ev.kind {
        kind::QP_CREATE => "qp_create",
        kind::QP_DESTROY => "qp_destroy",
        kind::MR_CREATE => "mr_create",
        kind::MR_DESTROY => "mr_destroy",
        kind::UMEM_GET => "umem_get",
        kind::UMEM_RELEASE => "umem_release",
        _ => "unknown",
    }
}

/// Applies one event; a process with nothing left leaves the view. (Not its exit: objects
/// outlive their creator when another process holds its file after a fork, or its main
/// thread exits first. They stay charged to it until they are destroyed.)
pub fn apply(view: &mut KernelView, ev: &Event) {
    let c = view.entry(ev.tgid).or_default();
    match ev.kind {
        kind::QP_CREATE => c.qps += 1,
        kind::QP_DESTROY => c.qps = c.qps.saturating_sub(1),
        kind::MR_CREATE => {
            c.mrs += 1;
            c.mr_bytes += ev.bytes;
        }
        kind::MR_DESTROY => {
            c.mrs = c.mrs.saturating_sub(1);
            c.mr_bytes = c.mr_bytes.saturating_sub(ev.bytes);
        }
        kind::UMEM_GET => c.pinned += ev.bytes,
        kind::UMEM_RELEASE => c.pinned = c.pinned.saturating_sub(ev.bytes),
        _ => {}
    }
    if *c == Counts::default() {
        view.remove(&ev.tgid);
    }
}

/// A process's objects as held amounts (pinned memory is not a capped dimension).
pub fn held(c: &Counts) -> Amounts {
    Amounts {
        qp: c.qps,
        mr: c.mrs,
        mr_bytes: c.mr_bytes,
    }
}

/// The view summed over processes, and how many processes it holds.
pub fn totals(view: &KernelView) -> (usize, Counts) {
    let sum = view.values().fold(Counts::default(), |a, c| Counts {
        qps: a.qps + c.qps,
        mrs: a.mrs + c.mrs,
        mr_bytes: a.mr_bytes + c.mr_bytes,
        pinned: a.pinned + c.pinned,
    });
    (view.len(), sum)
}

/// Sets each process not in `leave` to what `dumped` says of it: its QPs, MRs and MR bytes
/// (pinned memory, which the dump does not list, stays as the events counted it, or the
/// dump's estimate for a process the view lacked). `leave` holds the processes the dump
/// cannot speak for: those with events while it ran, and those that are gone (the kernel
/// lists their surviving objects without a pid). Returns how many processes changed.
pub fn correct(view: &mut KernelView, dumped: &KernelView, leave: &HashSet<u32>) -> usize {
    let pids: HashSet<u32> = view.keys().chain(dumped.keys()).copied().collect();
    let mut changed = 0;
    for pid in pids.difference(leave) {
        let now = view.get(pid).copied();
        let mut c = dumped.get(pid).copied().unwrap_or_default();
        if let Some(now) = now {
            c.pinned = now.pinned;
        }
        if now == Some(c) || (now.is_none() && c == Counts::default()) {
            continue;
        }
        changed += 1;
        if c == Counts::default() {
            view.remove(pid);
        } else {
            view.insert(*pid, c);
        }
    }
    changed
}

/// Bounds what the view charges to processes that are gone (`gone`, none of them busy
/// while the dump ran) by the objects the dump lists without a process: objects that
/// outlive their creator are real, but no more of them than the kernel still has. A
/// destruction the monitor missed (objects freed while the agent was down, between its
/// restart and the eBPF attach, or events lost) would otherwise stay charged for good —
/// found by the nemesis: a node charged a tenant for minutes with objects the kernel no
/// longer held, and its programs were denied with the cap unused. Returns how many
/// processes changed.
pub fn bound_gone(view: &mut KernelView, gone: &HashSet<u32>, orphans: &Counts) -> usize {
    let mut pids: Vec<u32> = gone
        .iter()
        .copied()
        .filter(|p| view.contains_key(p))
        .collect();
    pids.sort_unstable();
    let mut left = *orphans;
    let mut changed = 0;
    for pid in pids {
        let c = view.get_mut(&pid).expect("listed");
        let before = *c;
        c.qps = c.qps.min(left.qps);
        c.mrs = c.mrs.min(left.mrs);
        c.mr_bytes = c.mr_bytes.min(left.mr_bytes);
        c.pinned = c.pinned.min(c.mr_bytes);
        left.qps -= c.qps;
        left.mrs -= c.mrs;
        left.mr_bytes -= c.mr_bytes;
        if *c != before {
            changed += 1;
            if c.qps == 0 && c.mrs == 0 {
                view.remove(&pid);
            }
        }
    }
    changed
}

/// Adds the entries of `rdma resource show qp|mr -j` (`what` is "qp" or "mr") to `view`,
/// and those of processes that are gone to `orphans`. Objects of kernel users (a `comm`
/// naming the kernel module, no pid) are not anyone's to charge; user objects whose creator
/// is gone (another process holds its file) are listed with neither pid nor comm.
pub fn add_dump(
    view: &mut KernelView,
    orphans: &mut Counts,
    what: &str,
    entries: &[serde_json::Value],
) {
    for e in entries {
        let c = match e["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
            Some(pid) => view.entry(pid).or_default(),
            None if e.get("comm").is_none() => &mut *orphans,
            None => continue,
        };
        if what == "qp" {
            c.qps += 1;
        } else {
            c.mrs += 1;
            let len = e["mrlen"].as_u64().unwrap_or(0);
            c.mr_bytes += len;
            // The dump does not list pinned memory; a user MR pins its length (on-demand
            // paging MRs, which pin nothing, are the exception).
            c.pinned += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: u32, tgid: u32, bytes: u64) -> Event {
        Event {
            kind,
            tgid,
            bytes,
            ..Event::default()
        }
    }

    #[test]
    fn events_count_per_process_until_their_objects_are_gone() {
        let mut v = KernelView::new();
        apply(&mut v, &ev(kind::QP_CREATE, 7, 0));
        apply(&mut v, &ev(kind::MR_CREATE, 7, 4096));
        apply(&mut v, &ev(kind::UMEM_GET, 7, 4096));
        apply(&mut v, &ev(kind::QP_CREATE, 8, 0));
        assert_eq!(
            held(&v[&7]),
            Amounts {
                qp: 1,
                mr: 1,
                mr_bytes: 4096
            }
        );
        assert_eq!(totals(&v).0, 2);
        // A destroy never goes below zero; a process with nothing left is dropped.
        apply(&mut v, &ev(kind::QP_DESTROY, 8, 0));
        apply(&mut v, &ev(kind::QP_DESTROY, 8, 0));
        assert!(!v.contains_key(&8));
        apply(&mut v, &ev(kind::QP_DESTROY, 7, 0));
        apply(&mut v, &ev(kind::MR_DESTROY, 7, 4096));
        assert!(v.contains_key(&7), "its umem is still pinned");
        apply(&mut v, &ev(kind::UMEM_RELEASE, 7, 4096));
        assert!(v.is_empty());
    }

    #[test]
    fn a_dump_corrects_every_process_that_was_quiet_while_it_ran() {
        let counts = |qps, mrs, pinned| Counts {
            qps,
            mrs,
            mr_bytes: mrs * 4096,
            pinned,
        };
        let mut view = KernelView::from([
            (1, counts(2, 0, 0)),
            (2, counts(1, 5, 8192)),
            (3, counts(4, 0, 0)),
        ]);
        // 1 missed a QP created before the agent started, 2 churns (events during the dump),
        // 3 lost a destroy event, 4 the view never saw.
        let dumped = KernelView::from([
            (1, counts(3, 0, 0)),
            (2, counts(9, 9, 9)),
            (3, counts(3, 0, 0)),
            (4, counts(0, 1, 4096)),
        ]);
        let touched = HashSet::from([2]);
        assert_eq!(correct(&mut view, &dumped, &touched), 3);
        assert_eq!(view[&1], counts(3, 0, 0));
        assert_eq!(view[&2], counts(1, 5, 8192), "left to its events");
        assert_eq!(view[&3], counts(3, 0, 0));
        assert_eq!(
            view[&4],
            counts(0, 1, 4096),
            "the dump's estimate of pinned bytes"
        );
        // Gone from the kernel: gone from the view, but pinned memory the events saw stays.
        let mut view = KernelView::from([(5, counts(1, 0, 0)), (6, counts(1, 0, 64))]);
        assert_eq!(correct(&mut view, &KernelView::new(), &HashSet::new()), 2);
        assert_eq!(view.get(&5), None);
        assert_eq!(view[&6], counts(0, 0, 64));
        // Nothing to do twice.
        assert_eq!(correct(&mut view, &KernelView::new(), &HashSet::new()), 0);
    }

    #[test]
    fn a_dump_counts_user_objects_only() {
        let mut v = KernelView::new();
        let qps: Vec<serde_json::Value> =
            serde_json::from_str(r#"[{"pid":5,"comm":"x"},{"comm":"[ib_core]"},{"pid":5}]"#)
                .unwrap();
        let mrs: Vec<serde_json::Value> =
            serde_json::from_str(r#"[{"pid":5,"mrlen":8192},{"mrlen":4096}]"#).unwrap();
        let mut orphans = Counts::default();
        add_dump(&mut v, &mut orphans, "qp", &qps);
        add_dump(&mut v, &mut orphans, "mr", &mrs);
        // As `rdma -j resource show` lists a QP whose creator is gone (a forked child
        // holds it), and the GSI QP of the kernel (named, never charged).
        let qps: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"ifname":"rxe0","lqpn":17,"type":"RC"},{"ifname":"rxe0","lqpn":1,"type":"GSI","comm":"ib_core"}]"#,
        )
        .unwrap();
        add_dump(&mut v, &mut orphans, "qp", &qps);
        assert_eq!(
            (orphans.qps, orphans.mrs, orphans.mr_bytes),
            (1, 1, 4096),
            "{orphans:?}"
        );
        assert_eq!(
            held(&v[&5]),
            Amounts {
                qp: 2,
                mr: 1,
                mr_bytes: 8192
            }
        );
        assert_eq!(v[&5].pinned, 8192);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn what_gone_processes_are_charged_is_bounded_by_what_the_kernel_still_lists() {
        let counts = |qps, mrs| Counts {
            qps,
            mrs,
            mr_bytes: mrs * 100,
            pinned: mrs * 100,
        };
        // 7 and 9 are gone; 8 is alive (not in `gone`: the dump speaks for it).
        let mut view = KernelView::from([(7, counts(3, 1)), (8, counts(2, 0)), (9, counts(2, 2))]);
        let gone = HashSet::from([7, 9]);
        // The kernel lists 2 QPs and 1 MR without a process (a forked child holds them):
        // that much stays charged, the rest was destroyed unseen.
        assert_eq!(bound_gone(&mut view, &gone, &counts(2, 1)), 2);
        assert_eq!(view[&7], counts(2, 1));
        assert!(!view.contains_key(&9), "{view:?}");
        assert_eq!(view[&8], counts(2, 0));
        // None listed: nothing gone stays charged; nothing changes twice.
        assert_eq!(bound_gone(&mut view, &gone, &Counts::default()), 1);
        assert_eq!(view.len(), 1);
        assert_eq!(bound_gone(&mut view, &gone, &Counts::default()), 0);
    }
}
