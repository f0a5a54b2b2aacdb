//! The kernel's live RDMA objects per process, as the eBPF monitor reports them: the view
//! the backstop reconciles with the ledger, and a restarted agent's claims are bounded by.
//! Pure: events and resource dumps in, counts out.

use std::collections::HashMap;

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
        kind::PROCESS_EXIT => "process_exit",
        kind::UMEM_GET => "umem_get",
        kind::UMEM_RELEASE => "umem_release",
        _ => "unknown",
    }
}

/// Applies one event; a process with nothing left (or that exited) leaves the view.
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
    if ev.kind == kind::PROCESS_EXIT || *c == Counts::default() {
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

/// Adds the entries of `rdma resource show qp|mr -j` (`what` is "qp" or "mr") to `view`.
/// Objects of kernel users (no pid) are not anyone's to charge.
pub fn add_dump(view: &mut KernelView, what: &str, entries: &[serde_json::Value]) {
    for e in entries {
        let Some(pid) = e["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
            continue;
        };
        let c = view.entry(pid).or_default();
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
    fn events_count_per_process_and_an_exit_clears_it() {
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
        apply(&mut v, &ev(kind::PROCESS_EXIT, 7, 0));
        assert!(v.is_empty());
    }

    #[test]
    fn a_dump_counts_user_objects_only() {
        let mut v = KernelView::new();
        let qps: Vec<serde_json::Value> =
            serde_json::from_str(r#"[{"pid":5,"comm":"x"},{"comm":"[ib_core]"},{"pid":5}]"#)
                .unwrap();
        let mrs: Vec<serde_json::Value> =
            serde_json::from_str(r#"[{"pid":5,"mrlen":8192}]"#).unwrap();
        add_dump(&mut v, "qp", &qps);
        add_dump(&mut v, "mr", &mrs);
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
}
