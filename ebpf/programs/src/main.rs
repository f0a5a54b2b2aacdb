//! rdmaq's kernel-side monitor of RDMA object lifetimes (DESIGN.md, "Kernel monitor"):
//! every user QP and MR the kernel creates or destroys, whichever path the command took
//! (write() or ioctl), and the user memory pinned for them (umem), attributed to its
//! process (the one that created it, also after it exits while the objects live on), counted
//! per process and streamed to the agent. Struct offsets come from the agent (the running kernel's BTF) through `CONFIG`;
//! destroys are paired with creates by object address, never by `current` (a destroy may
//! run from another task's exit or close).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{kprobe, kretprobe, map},
    maps::{Array, HashMap, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use rdmaq_ebpf_common::{Counts, Event, MAX_OBJECTS, MAX_PROCESSES, RESTRACK_MR, config, kind};

#[map]
static CONFIG: Array<u64> = Array::with_max_entries(config::LEN, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// QP address -> owning tgid.
#[map]
static QPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_OBJECTS, 0);

/// MR address -> (owning tgid, length) packed as tgid << 48 | length (lengths < 2^48).
#[map]
static MRS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_OBJECTS, 0);

/// Thread (pid_tgid) -> bytes it asked `ib_umem_get` to pin, between entry and return.
#[map]
static UMEM_ASKED: HashMap<u64, u64> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// umem address -> (owning tgid, bytes pinned) packed as tgid << 48 | bytes.
#[map]
static UMEMS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_OBJECTS, 0);

/// Live objects per tgid.
#[map]
static PROCS: HashMap<u32, Counts> = HashMap::with_max_entries(MAX_PROCESSES, 0);

fn tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

fn cfg(i: u32) -> u64 {
    CONFIG.get(i).copied().unwrap_or(0)
}

fn emit(kind: u32, tgid: u32, ptr: u64, bytes: u64) {
    if let Some(mut slot) = EVENTS.reserve::<Event>(0) {
        slot.write(Event { kind, tgid, ptr, bytes });
        slot.submit(0);
    }
}

/// Adds to the live objects of their creator `tgid`. The entry lives exactly as long as it
/// counts something: objects outlive their creator when another process holds its file
/// (after a fork) or its main thread exited first, and they stay charged to it until they
/// are destroyed, whoever destroys them.
fn count(tgid: u32, qps: i64, mrs: i64, bytes: i64, pinned: i64) {
    let mut c = PROCS.get_ptr(&tgid).map(|p| {
        // SAFETY: the pointer comes from a map lookup and is valid for this program run.
        unsafe { *p }
    }).unwrap_or_default();
    c.qps = (c.qps as i64 + qps).max(0) as u64;
    c.mrs = (c.mrs as i64 + mrs).max(0) as u64;
    c.mr_bytes = (c.mr_bytes as i64 + bytes).max(0) as u64;
    c.pinned = (c.pinned as i64 + pinned).max(0) as u64;
    if c == Counts::default() {
        let _ = PROCS.remove(&tgid);
    } else {
        let _ = PROCS.insert(&tgid, &c, 0);
    }
}

const LOW48: u64 = (1 << 48) - 1;

/// Records object `ptr` of `owner` and `bytes` (< 2^48) in a pointer-keyed map.
fn track(map: &HashMap<u64, u64>, ptr: u64, owner: u32, bytes: u64) {
    let _ = map.insert(&ptr, &((u64::from(owner) << 48) | (bytes & LOW48)), 0);
}

/// Takes object `ptr` out of a pointer-keyed map: its (owner, bytes), if it was tracked.
fn untrack(map: &HashMap<u64, u64>, ptr: u64) -> Option<(u32, u64)> {
    let packed = map.get_ptr(&ptr).map(|p| {
        // SAFETY: map lookup result, valid for this program run.
        unsafe { *p }
    })?;
    let _ = map.remove(&ptr);
    Some(((packed >> 48) as u32, packed & LOW48))
}

/// `ib_umem_get(struct ib_device *, unsigned long addr, size_t size, int access)`: remember
/// the size until the call returns the umem.
#[kprobe]
pub fn umem_get_entry(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(2).unwrap_or(0);
    let _ = UMEM_ASKED.insert(&bpf_get_current_pid_tgid(), &size, 0);
    0
}

/// `ib_umem_get` returns the new `struct ib_umem *`, or an ERR_PTR.
#[kretprobe]
pub fn umem_get(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(size) = UMEM_ASKED.get_ptr(&id).map(|p| {
        // SAFETY: map lookup result, valid for this program run.
        unsafe { *p }
    }) else {
        return 0;
    };
    let _ = UMEM_ASKED.remove(&id);
    let ptr: u64 = ctx.ret().unwrap_or(0);
    if ptr == 0 || ptr >= (-4095i64) as u64 {
        return 0;
    }
    let owner = (id >> 32) as u32;
    let size = size & LOW48;
    track(&UMEMS, ptr, owner, size);
    count(owner, 0, 0, 0, size as i64);
    emit(kind::UMEM_GET, owner, ptr, size);
    0
}

/// `ib_umem_release(struct ib_umem *)`: may run from another task's exit or close, so the
/// owner comes from the map.
#[kprobe]
pub fn umem_release(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let Some((owner, size)) = untrack(&UMEMS, ptr) else {
        return 0;
    };
    count(owner, 0, 0, 0, -(size as i64));
    emit(kind::UMEM_RELEASE, owner, ptr, size);
    0
}

/// `ib_create_qp_user` returns the new `struct ib_qp *`, or an ERR_PTR.
#[kretprobe]
pub fn qp_create(ctx: RetProbeContext) -> u32 {
    let ptr: u64 = ctx.ret().unwrap_or(0);
    if ptr == 0 || ptr >= (-4095i64) as u64 {
        return 0;
    }
    let owner = tgid();
    let _ = QPS.insert(&ptr, &owner, 0);
    count(owner, 1, 0, 0, 0);
    emit(kind::QP_CREATE, owner, ptr, 0);
    0
}

/// `ib_destroy_qp_user(struct ib_qp *qp, ...)`
#[kprobe]
pub fn qp_destroy(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let Some(owner) = QPS.get_ptr(&ptr).map(|p| {
        // SAFETY: map lookup result, valid for this program run.
        unsafe { *p }
    }) else {
        return 0;
    };
    let _ = QPS.remove(&ptr);
    count(owner, -1, 0, 0, 0);
    emit(kind::QP_DESTROY, owner, ptr, 0);
    0
}

/// `rdma_restrack_add(struct rdma_restrack_entry *res)`: a user MR when
/// `res->type == RDMA_RESTRACK_MR && res->user`; the MR is `container_of(res, ib_mr, res)`.
#[kprobe]
pub fn restrack_add(ctx: ProbeContext) -> u32 {
    if cfg(config::READY) != 1 {
        return 0;
    }
    let res: u64 = ctx.arg(0).unwrap_or(0);
    if res == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a fault yields an error, not a crash.
    let ty: u32 = unsafe { bpf_probe_read_kernel((res + cfg(config::RESTRACK_TYPE)) as *const u32) }.unwrap_or(0);
    // SAFETY: as above.
    let user: u8 = unsafe { bpf_probe_read_kernel((res + cfg(config::RESTRACK_USER)) as *const u8) }.unwrap_or(0);
    if ty != RESTRACK_MR || user == 0 {
        return 0;
    }
    let mr = res - cfg(config::MR_RES);
    // SAFETY: as above.
    let length: u64 = unsafe { bpf_probe_read_kernel((mr + cfg(config::MR_LENGTH)) as *const u64) }.unwrap_or(0);
    let owner = tgid();
    let length = length & LOW48;
    track(&MRS, mr, owner, length);
    count(owner, 0, 1, length as i64, 0);
    emit(kind::MR_CREATE, owner, mr, length);
    0
}

/// `ib_dereg_mr_user(struct ib_mr *mr, ...)`
#[kprobe]
pub fn mr_destroy(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let Some((owner, length)) = untrack(&MRS, ptr) else {
        return 0;
    };
    count(owner, 0, -1, -(length as i64), 0);
    emit(kind::MR_DESTROY, owner, ptr, length);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF programs cannot panic at run time: the verifier rejects any path reaching here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
