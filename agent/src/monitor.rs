//! Loads the eBPF monitor into the running kernel: computes struct offsets from its BTF,
//! attaches the programs to ib_core (once the module is loaded) and streams the object
//! events into the agent's kernel view.
//!
//! The only `unsafe` of the agent lives here (registering the ring buffer's descriptor with
//! tokio), as DESIGN.md allows for the agent's BPF loading.
#![allow(unsafe_code)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use aya::{
    Ebpf, include_bytes_aligned,
    maps::{Array, RingBuf},
    programs::KProbe,
};
use rdmaq_ebpf_common::{Counts, Event, config};
use tokio::io::unix::AsyncFd;

use crate::{
    Error,
    btf::Structs,
    kernel::{self, KernelView},
    node::Agent,
};

/// The object built by build.rs (aligned for the ELF parser).
static OBJECT: &[u8] = include_bytes_aligned!(env!("RDMAQ_EBPF_OBJECT"));

/// How often the view is checked against the kernel's resource dump, and how soon after
/// the seed the first time (processes busy during the seed are corrected once they pause).
const RESYNC: Duration = Duration::from_secs(10);
const FIRST_RESYNC: Duration = Duration::from_secs(1);

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

    /// Corrects the view from the kernel's resource dump, process by process: one that had
    /// no event while the dump ran is set to what the dump says; one that had is left to its
    /// events (and corrected at a later resync, once it pauses), as is one that is gone. So objects missed at start-up
    /// or by a lost event (a full ring buffer) are found even while other processes keep
    /// creating and destroying. Returns the processes corrected, and those the dump lists.
    async fn resync(&mut self, agent: &Agent) -> Result<(usize, Vec<u32>), Error> {
        let before = self.take_queued();
        if !before.is_empty() {
            apply(agent, &before);
        }
        let dumped = tokio::task::spawn_blocking(dump)
            .await
            .unwrap_or_else(|e| Err(Error::Ebpf(format!("dump task: {e}"))))?;
        let during = self.take_queued();
        if !during.is_empty() {
            apply(agent, &during);
        }
        let (dumped, orphans) = dumped;
        let mut view = agent.kernel.lock().expect("kernel view");
        // Busy while the dump ran: left to the events. Gone: their objects may outlive
        // them, listed in the dump without a process — as many as it lists stay charged.
        let busy: HashSet<u32> = during.iter().map(|e| e.tgid).collect();
        let gone: HashSet<u32> = view
            .keys()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        let leave: HashSet<u32> = busy.union(&gone).copied().collect();
        let quiet_gone: HashSet<u32> = gone.difference(&busy).copied().collect();
        let corrected = kernel::correct(&mut view, &dumped, &leave)
            + kernel::bound_gone(&mut view, &quiet_gone, &orphans);
        Ok((corrected, dumped.keys().copied().collect()))
    }

    /// Seeds the agent's view from the kernel (the programs attached first): a process's
    /// objects are counted once whether they were created before the programs were attached
    /// (only in the dump) or after (only in the events).
    async fn seed(&mut self, agent: &Agent) {
        match self.resync(agent).await {
            Ok((corrected, pids)) => {
                tracing::info!(
                    processes = pids.len(),
                    corrected,
                    "kernel view seeded from the RDMA resource dump"
                );
                agent.preexisting.lock().expect("preexisting").extend(pids);
                agent
                    .kernel_seeded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no RDMA resource dump; objects created before the agent started are counted only once a dump succeeds");
            }
        }
    }

    /// Applies kernel events to the agent's view until the process ends; every `RESYNC`
    /// (the first one sooner), corrects it from the kernel's dump (`resync`).
    pub async fn run(mut self, agent: Arc<Agent>) {
        let mut resync =
            tokio::time::interval_at(tokio::time::Instant::now() + FIRST_RESYNC, RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    match self.resync(&agent).await {
                        Ok((0, _)) => {}
                        Ok((corrected, _)) => tracing::info!(processes = corrected, "kernel view corrected from the resource dump"),
                        Err(e) => tracing::debug!(error = %e, "resource dump failed"),
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
pub fn dump() -> Result<(KernelView, Counts), Error> {
    let mut view = KernelView::new();
    let mut orphans = Counts::default();
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
        kernel::add_dump(&mut view, &mut orphans, what, &entries);
    }
    Ok((view, orphans))
}

/// Retries loading until it works (ib_core may load after the agent starts), then runs.
/// Until then the view is refreshed from the kernel's resource dump (`refresh_view`).
pub async fn supervise(agent: Arc<Agent>) {
    let mut warned = false;
    loop {
        // Parsing the kernel's BTF and loading the programs takes seconds on a small VM:
        // off the async workers, which keep serving admissions meanwhile.
        let loading = tokio::task::spawn_blocking(Monitor::load);
        let loaded = refreshing(&agent, loading)
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
                    tracing::warn!(error = %e, "eBPF monitor not running; retrying every 5 s; meanwhile the kernel view is a resource dump taken every second");
                    warned = true;
                }
                refreshing(&agent, tokio::time::sleep(Duration::from_secs(5))).await;
            }
        }
    }
}

/// Awaits `work`, refreshing the kernel view from a resource dump every
/// `reconcile::REFRESH` meanwhile.
async fn refreshing<T>(agent: &Agent, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut refresh = tokio::time::interval(crate::reconcile::REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await; // the first tick is immediate; the start-up dump was just taken
    loop {
        tokio::select! {
            // The work first: a refresh after the monitor attached could count an object
            // both in its dump and in a queued event. (A dump under way as it attaches
            // still can: an over-count, which the seed's resync corrects once the process
            // pauses — never an object missed.)
            biased;
            done = &mut work => return done,
            _ = refresh.tick() => crate::reconcile::refresh_view(agent).await,
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
