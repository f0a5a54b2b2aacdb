//! Loads the eBPF monitor into the running kernel: computes struct offsets from its BTF,
//! attaches the programs to ib_core (once the module is loaded) and streams the object
//! events into the agent's kernel view.
//!
//! The only `unsafe` of the agent lives here (registering the ring buffer's descriptor with
//! tokio), as DESIGN.md allows for the agent's BPF loading.
#![allow(unsafe_code)]

use std::{sync::Arc, time::Duration};

use aya::{
    Ebpf, include_bytes_aligned,
    maps::{Array, RingBuf},
    programs::{KProbe, TracePoint},
};
use rdmaq_ebpf_common::{Event, config};
use tokio::io::unix::AsyncFd;

use crate::{
    Error,
    btf::Structs,
    kernel::{self, KernelView},
    node::Agent,
};

/// The object built by build.rs (aligned for the ELF parser).
static OBJECT: &[u8] = include_bytes_aligned!(env!("RDMAQ_EBPF_OBJECT"));

/// How often the view is checked against the kernel's resource dump.
const RESYNC: Duration = Duration::from_secs(30);
/// Dumps tried at start-up before settling for one during which objects changed.
const SEED_ATTEMPTS: usize = 10;

/// (program, kernel function)
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

    /// The events queued so far.
    fn take_queued(&mut self) -> Vec<Event> {
        let ring = self.events.get_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(ev) = Event::from_bytes(&item) {
                batch.push(ev);
            }
        }
        batch
    }

    /// The kernel's resource dump, and whether no RDMA object was created or destroyed while
    /// it ran (then it agrees exactly with the event stream; otherwise it may or may not
    /// include those objects). Events queued before it are dropped when `drop_before` (they
    /// are in the dump), else applied first, as are those queued during a dump that was not
    /// quiet.
    async fn quiet_dump(
        &mut self,
        agent: &Agent,
        drop_before: bool,
    ) -> Result<(KernelView, bool), Error> {
        let before = self.take_queued();
        if !drop_before && !before.is_empty() {
            apply(agent, &before);
        }
        let view = tokio::task::spawn_blocking(dump)
            .await
            .unwrap_or_else(|e| Err(Error::Ebpf(format!("dump task: {e}"))))?;
        let during = self.take_queued();
        if !drop_before && !during.is_empty() {
            apply(agent, &during);
        }
        Ok((view, during.is_empty()))
    }

    /// Seeds the agent's view from the kernel: attached first, then a dump taken while no
    /// object changed, so that an object is counted once whether it was created before the
    /// programs were attached (only in the dump) or after (only in the events).
    async fn seed(&mut self, agent: &Agent) {
        let mut seeded = None;
        for attempt in 1..=SEED_ATTEMPTS {
            match self.quiet_dump(agent, true).await {
                Ok((view, quiet)) => {
                    seeded = Some((view, quiet));
                    if quiet {
                        break;
                    }
                    // Objects changed while it ran: take it again (those changes are in
                    // the next one); the last one stays as a fallback.
                    if attempt < SEED_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no RDMA resource dump; objects created before the agent started are not counted");
                    return;
                }
            }
        }
        let Some((view, quiet)) = seeded else { return };
        if !quiet {
            tracing::warn!(
                "RDMA objects changed during every start-up dump; the view is checked again every 30 s"
            );
        }
        let pids: Vec<u32> = view.keys().copied().collect();
        tracing::info!(
            processes = pids.len(),
            quiet,
            "kernel view seeded from the RDMA resource dump"
        );
        *agent.kernel.lock().expect("kernel view") = view;
        agent.preexisting.lock().expect("preexisting").extend(pids);
    }

    /// Applies kernel events to the agent's view until the process ends; every `RESYNC`,
    /// replaces the view with a quiet dump if one can be had (an event ever lost — a full
    /// ring buffer — or an object missed at start-up is corrected there).
    pub async fn run(mut self, agent: Arc<Agent>) {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            tokio::select! {
                ready = self.events.readable_mut() => {
                    let Ok(mut guard) = ready else { return };
                    // Readiness is cleared before draining, so that an event submitted
                    // while draining wakes the next wait instead of waiting for another.
                    guard.clear_ready();
                    drop(guard);
                    let batch = self.take_queued();
                    if !batch.is_empty() {
                        apply(&agent, &batch);
                    }
                }
                _ = resync.tick() => {
                    if let Ok((mut view, true)) = self.quiet_dump(&agent, false).await {
                        let mut current = agent.kernel.lock().expect("kernel view");
                        // The dump lists no pinned memory: keep what the events counted.
                        for (pid, c) in view.iter_mut() {
                            if let Some(now) = current.get(pid) {
                                c.pinned = now.pinned;
                            }
                        }
                        if *current != view {
                            tracing::info!(processes = view.len(), "kernel view corrected from a quiet resource dump");
                            *current = view;
                        }
                    }
                }
            }
        }
    }
}

fn apply(agent: &Agent, events: &[Event]) {
    let mut view = agent.kernel.lock().expect("kernel view");
    for ev in events {
        agent
            .metrics
            .kernel_events
            .get_or_create(&vec![("event", kernel::event_name(ev).to_string())])
            .inc();
        kernel::apply(&mut view, ev);
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
        kernel::add_dump(&mut view, what, &entries);
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
                m.seed(&agent).await;
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
