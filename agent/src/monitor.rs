//! Loads the eBPF monitor into the running kernel: computes struct offsets from its BTF,
//! attaches the programs to ib_core (once the module is loaded) and streams the object
//! events into the agent's kernel view.
//!
//! The only `unsafe` of the agent lives here (registering the ring buffer's descriptor with
//! tokio), as DESIGN.md allows for the agent's BPF loading.
#![allow(unsafe_code)]

use std::{collections::HashMap, sync::Arc, time::Duration};

use aya::{
    Ebpf, include_bytes_aligned,
    maps::{Array, RingBuf},
    programs::{KProbe, TracePoint},
};
use rdmaq_ebpf_common::{Counts, Event, config, kind};
use tokio::io::unix::AsyncFd;

use crate::{Error, agent::Agent, btf::Structs};

/// The object built by build.rs (aligned for the ELF parser).
static OBJECT: &[u8] = include_bytes_aligned!(env!("RDMAQ_EBPF_OBJECT"));

/// (program, kernel function, is a return probe)
const PROBES: [(&str, &str); 7] = [
    ("qp_create", "ib_create_qp_user"),
    ("qp_destroy", "ib_destroy_qp_user"),
    ("restrack_add", "rdma_restrack_add"),
    ("mr_destroy", "ib_dereg_mr_user"),
    // Pinned user memory (module ib_uverbs, which any user-space verbs program loads).
    ("umem_get_entry", "ib_umem_get"),
    ("umem_get", "ib_umem_get"),
    ("umem_release", "ib_umem_release"),
];

/// What the kernel holds, per process, as the monitor has seen it.
pub type KernelView = HashMap<u32, Counts>;

fn ebpf(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Ebpf(format!("{what}: {e}"))
}

fn offsets() -> Result<[(u32, u64); 4], Error> {
    let base = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| ebpf("reading /sys/kernel/btf/vmlinux", e))?;
    let ib_core = std::fs::read("/sys/kernel/btf/ib_core")
        .map_err(|e| ebpf("reading /sys/kernel/btf/ib_core", e))?;
    let s = Structs::parse(&base, &[("ib_core", &ib_core)]).map_err(|e| ebpf("BTF", e))?;
    let off = |st: &str, m: &str| s.offset(st, m).map_err(|e| ebpf("BTF", e));
    Ok([
        (config::RESTRACK_TYPE, off("rdma_restrack_entry", "type")?),
        (config::RESTRACK_USER, off("rdma_restrack_entry", "user")?),
        (config::MR_RES, off("ib_mr", "res")?),
        (config::MR_LENGTH, off("ib_mr", "length")?),
    ])
}

pub struct Monitor {
    _ebpf: Ebpf,
    events: AsyncFd<RingBuf<aya::maps::MapData>>,
}

impl Monitor {
    /// Loads and attaches everything; fails if ib_core or ib_uverbs is not loaded or the
    /// kernel lacks what the programs need.
    pub fn load() -> Result<Monitor, Error> {
        for module in ["ib_core", "ib_uverbs"] {
            if !std::path::Path::new("/sys/module").join(module).exists() {
                return Err(Error::Ebpf(format!(
                    "{module} is not loaded (no RDMA device on this host?)"
                )));
            }
        }
        let offsets = offsets()?;
        let mut bpf = Ebpf::load(OBJECT).map_err(|e| ebpf("loading the object", e))?;
        {
            let mut cfg: Array<_, u64> = Array::try_from(
                bpf.map_mut("CONFIG")
                    .ok_or_else(|| ebpf("map", "CONFIG missing"))?,
            )
            .map_err(|e| ebpf("CONFIG", e))?;
            for (i, v) in offsets {
                cfg.set(i, v, 0).map_err(|e| ebpf("CONFIG", e))?;
            }
            cfg.set(config::READY, 1, 0)
                .map_err(|e| ebpf("CONFIG", e))?;
        }
        for (prog, func) in PROBES {
            let p: &mut KProbe = bpf
                .program_mut(prog)
                .ok_or_else(|| ebpf(prog, "missing from the object"))?
                .try_into()
                .map_err(|e| ebpf(prog, e))?;
            p.load().map_err(|e| ebpf(prog, e))?;
            p.attach(func, 0)
                .map_err(|e| ebpf(&format!("attaching {prog} to {func}"), e))?;
        }
        let tp: &mut TracePoint = bpf
            .program_mut("process_exit")
            .ok_or_else(|| ebpf("process_exit", "missing"))?
            .try_into()
            .map_err(|e| ebpf("process_exit", e))?;
        tp.load().map_err(|e| ebpf("process_exit", e))?;
        tp.attach("sched", "sched_process_exit")
            .map_err(|e| ebpf("process_exit", e))?;
        let ring = RingBuf::try_from(
            bpf.take_map("EVENTS")
                .ok_or_else(|| ebpf("map", "EVENTS missing"))?,
        )
        .map_err(|e| ebpf("EVENTS", e))?;
        // SAFETY: the AsyncFd owns the ring buffer, so its descriptor stays open (and is not
        // reused) for as long as it is registered.
        let events = unsafe { AsyncFd::register(ring) }.map_err(|e| ebpf("EVENTS", e))?;
        tracing::info!(offsets = ?offsets, "eBPF monitor attached to ib_core");
        Ok(Monitor { _ebpf: bpf, events })
    }

    /// Drops the events queued so far: they are already in a resource dump taken since.
    fn discard_queued(&mut self) -> usize {
        let ring = self.events.get_mut();
        let mut dropped = 0;
        while ring.next().is_some() {
            dropped += 1;
        }
        dropped
    }

    /// Applies kernel events to the agent's view until the process ends.
    pub async fn run(mut self, agent: Arc<Agent>) {
        loop {
            let Ok(mut guard) = self.events.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(ev) = Event::from_bytes(&item) {
                    batch.push(ev);
                }
            }
            guard.clear_ready();
            if !batch.is_empty() {
                apply(&agent, &batch);
            }
        }
    }
}

fn apply(agent: &Agent, events: &[Event]) {
    let mut view = agent.kernel.lock().expect("kernel view");
    for ev in events {
        let name = match ev.kind {
            kind::QP_CREATE => "qp_create",
            kind::QP_DESTROY => "qp_destroy",
            kind::MR_CREATE => "mr_create",
            kind::MR_DESTROY => "mr_destroy",
            kind::PROCESS_EXIT => "process_exit",
            kind::UMEM_GET => "umem_get",
            kind::UMEM_RELEASE => "umem_release",
            _ => "unknown",
        };
        agent
            .metrics
            .kernel_events
            .get_or_create(&vec![("event", name.to_string())])
            .inc();
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
}

/// The kernel's own list of live QPs and MRs per process (the RDMA netlink resource dump
/// that `rdma resource show` prints): the starting point of the view, so that a restarted
/// agent counts objects created before it started, once.
pub fn dump() -> Result<KernelView, Error> {
    let mut view = KernelView::new();
    for what in ["qp", "mr"] {
        let out = std::process::Command::new("rdma")
            .args(["resource", "show", what, "-j"])
            .output()
            .map_err(|e| ebpf("running `rdma resource show`", e))?;
        if !out.status.success() {
            return Err(ebpf(
                "rdma resource show",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let entries: Vec<serde_json::Value> = serde_json::from_str(text.trim()).unwrap_or_default();
        for e in entries {
            // Objects of kernel users have no pid.
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
    Ok(view)
}

/// Retries loading until it works (ib_core may load after the agent starts), then runs.
pub async fn supervise(agent: Arc<Agent>) {
    let mut warned = false;
    loop {
        // Parsing the kernel's BTF and loading the programs takes seconds on a small VM:
        // off the async workers, which keep serving admissions meanwhile.
        let loaded = tokio::task::spawn_blocking(Monitor::load)
            .await
            .unwrap_or_else(|e| Err(Error::Ebpf(format!("loader task: {e}"))));
        match loaded {
            Ok(mut m) => {
                // Attached first, then the dump: an object created in between is both in the
                // dump and queued as an event. So the view is replaced wholesale with the dump
                // and the events queued until then are dropped (they are in it); only an
                // object created in the instant between the dump's end and the drop would be
                // missed, instead of every object of the dump's duration counted twice.
                let dumped = tokio::task::spawn_blocking(dump)
                    .await
                    .unwrap_or_else(|e| Err(Error::Ebpf(format!("dump task: {e}"))));
                match dumped {
                    Ok(view) => {
                        let dropped = m.discard_queued();
                        let pids: Vec<u32> = view.keys().copied().collect();
                        tracing::info!(
                            processes = pids.len(),
                            events_in_dump = dropped,
                            "kernel view seeded from the RDMA resource dump"
                        );
                        *agent.kernel.lock().expect("kernel view") = view;
                        agent.preexisting.lock().expect("preexisting").extend(pids);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no RDMA resource dump; objects created before the agent started are not counted")
                    }
                }
                *agent.monitor_up.lock().expect("flag") = true;
                m.run(agent.clone()).await;
                return;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "eBPF monitor not running; retrying every 5 s (no kernel view, no backstop)");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OBJECT;

    #[test]
    fn embedded_object_is_an_ebpf_elf() {
        assert_eq!(&OBJECT[..4], b"\x7fELF", "not an ELF file");
        // e_machine (offset 18, little endian) is EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
    }
}
