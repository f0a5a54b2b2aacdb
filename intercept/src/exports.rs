//! The interposed libibverbs entry points. Each exported function finds the real one (see
//! real.rs), lets only the outermost of nested verbs be admitted (see `Reentry`), asks the
//! ledger, calls the real verb, and records the outcome. A panic never crosses into C: the
//! verb then runs unadmitted, as if the library were absent. The symbol versions
//! (`ibv_create_qp@@IBVERBS_1.1`, `ibv_create_qp@IBVERBS_1.0`, ...) are assigned at the end
//! of this file and declared in `libibverbs.map`.

use std::{
    ffi::{c_int, c_void},
    panic::{AssertUnwindSafe, catch_unwind},
};

use crate::{
    admit::Denial,
    ffi::{IbvMr, IbvQpCap, IbvQpInitAttr},
    global::{Reentry, config, with_process},
    log::log_at,
    ops,
    real::{self, RealFn},
};

fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Runs `f` without letting a panic escape; `None` if it panicked.
fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// The real function as a typed pointer, or NULL-with-ENOSYS semantics for the caller.
///
/// # Safety
/// `F` must be the function pointer type of the symbol `f` names.
unsafe fn resolve<F: Copy>(f: &RealFn) -> Option<F> {
    let addr = f.get();
    if addr.is_none() {
        log_at!(
            config(),
            Error,
            "{} is not available from any loaded libibverbs",
            f.name()
        );
        set_errno(libc::ENOSYS);
    }
    // SAFETY: the caller guarantees F matches the symbol; a data pointer and a function
    // pointer have the same size on every platform this library builds for.
    addr.map(|a| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&a) })
}

fn deny(d: &Denial) {
    log_at!(config(), Warn, "{d}");
    set_errno(d.errno());
}

/// Admits a QP, creates it with `create`, and records or rolls back.
pub(crate) fn admit_and_create_qp(
    cap: &mut IbvQpCap,
    qp_type: u32,
    create: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    if !config().enabled {
        return create();
    }
    let source = match quietly(|| with_process(|p| p.admit_qp(cap, qp_type))) {
        None => return create(),
        Some(Err(d)) => {
            deny(&d);
            return std::ptr::null_mut();
        }
        Some(Ok(s)) => s,
    };
    let qp = create();
    let saved = errno();
    quietly(|| {
        with_process(|p| match qp.is_null() {
            true => p.abort_qp(source),
            false => p.commit_qp(qp as usize, source),
        })
    });
    if !qp.is_null() {
        log_at!(config(), Debug, "qp admitted ({source:?})");
    }
    set_errno(saved);
    qp
}

pub(crate) fn admit_and_register_mr(
    bytes: u64,
    register: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    if !config().enabled {
        return register();
    }
    let source = match quietly(|| with_process(|p| p.admit_mr(bytes))) {
        None => return register(),
        Some(Err(d)) => {
            deny(&d);
            return std::ptr::null_mut();
        }
        Some(Ok(s)) => s,
    };
    let mr = register();
    let saved = errno();
    quietly(|| {
        with_process(|p| match mr.is_null() {
            true => p.abort_mr(source, bytes),
            false => p.commit_mr(mr as usize, source, bytes),
        })
    });
    if !mr.is_null() {
        log_at!(config(), Debug, "mr of {bytes} bytes admitted ({source:?})");
    }
    set_errno(saved);
    mr
}

/// Forgets an object once its destroy verb succeeded (returned 0).
pub(crate) fn after_destroy(ret: c_int, f: impl FnOnce(&mut crate::admit::Process)) -> c_int {
    if ret == 0 && config().enabled {
        let saved = errno();
        quietly(|| with_process(f));
        set_errno(saved);
    }
    ret
}

pub(crate) fn count_cq(cq: *mut c_void, created: bool) {
    if !cq.is_null() && config().enabled {
        quietly(|| with_process(|p| p.note_cq(cq as usize, created)));
    }
}

type CreateQp = unsafe extern "C" fn(*mut c_void, *mut IbvQpInitAttr) -> *mut c_void;
type DestroyQp = unsafe extern "C" fn(*mut c_void) -> c_int;
type RegMr = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, c_int) -> *mut c_void;
type RegMrIova = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u64, c_int) -> *mut c_void;
type RegMrIova2 = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u64, u32) -> *mut c_void;
type RegDmabufMr = unsafe extern "C" fn(*mut c_void, u64, usize, u64, c_int, c_int) -> *mut c_void;
type ReregMr =
    unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *mut c_void, usize, c_int) -> c_int;
type DeregMr = unsafe extern "C" fn(*mut c_void) -> c_int;
type OpenDevice = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type CloseDevice = unsafe extern "C" fn(*mut c_void) -> c_int;
type CreateCq =
    unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *mut c_void, c_int) -> *mut c_void;
type DestroyCq = unsafe extern "C" fn(*mut c_void) -> c_int;
type AllocPd = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type DeallocPd = unsafe extern "C" fn(*mut c_void) -> c_int;

// ---------------------------------------------------------------------- QPs

unsafe fn create_qp_with(f: &RealFn, pd: *mut c_void, attr: *mut IbvQpInitAttr) -> *mut c_void {
    // SAFETY: `f` names an ibv_create_qp, whose type is CreateQp.
    let Some(real) = (unsafe { resolve::<CreateQp>(f) }) else {
        return std::ptr::null_mut();
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's arguments.
        return unsafe { real(pd, attr) };
    };
    if attr.is_null() {
        // SAFETY: as above; libibverbs reports the bad argument itself.
        return unsafe { real(pd, attr) };
    }
    // SAFETY: a non-NULL attr points to the caller's ibv_qp_init_attr.
    let (cap, qp_type) = unsafe { (&mut (*attr).cap, (*attr).qp_type) };
    admit_and_create_qp(cap, qp_type, || {
        // SAFETY: as above.
        unsafe { real(pd, attr) }
    })
}

/// `ibv_create_qp@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_create_qp`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_create_qp(
    pd: *mut c_void,
    attr: *mut IbvQpInitAttr,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { create_qp_with(&real::CREATE_QP, pd, attr) }
}

/// `ibv_create_qp@IBVERBS_1.0` (binaries linked against the 2006 ABI; same attr layout).
///
/// # Safety
/// Called by C with `ibv_create_qp`'s 1.0 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_create_qp_1_0(
    pd: *mut c_void,
    attr: *mut IbvQpInitAttr,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { create_qp_with(&real::CREATE_QP_1_0, pd, attr) }
}

unsafe fn destroy_qp_with(f: &RealFn, qp: *mut c_void) -> c_int {
    // SAFETY: `f` names an ibv_destroy_qp.
    let Some(real) = (unsafe { resolve::<DestroyQp>(f) }) else {
        return libc::ENOSYS;
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's argument.
        return unsafe { real(qp) };
    };
    // SAFETY: as above.
    let ret = unsafe { real(qp) };
    after_destroy(ret, |p| p.release_qp(qp as usize))
}

/// `ibv_destroy_qp@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_destroy_qp`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_destroy_qp(qp: *mut c_void) -> c_int {
    // SAFETY: same contract.
    unsafe { destroy_qp_with(&real::DESTROY_QP, qp) }
}

/// `ibv_destroy_qp@IBVERBS_1.0`
///
/// # Safety
/// Called by C with `ibv_destroy_qp`'s 1.0 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_destroy_qp_1_0(qp: *mut c_void) -> c_int {
    // SAFETY: same contract.
    unsafe { destroy_qp_with(&real::DESTROY_QP_1_0, qp) }
}

// ---------------------------------------------------------------------- MRs

unsafe fn reg_mr_with(
    f: &RealFn,
    pd: *mut c_void,
    addr: *mut c_void,
    len: usize,
    access: c_int,
) -> *mut c_void {
    // SAFETY: `f` names an ibv_reg_mr.
    let Some(real) = (unsafe { resolve::<RegMr>(f) }) else {
        return std::ptr::null_mut();
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's arguments.
        return unsafe { real(pd, addr, len, access) };
    };
    admit_and_register_mr(len as u64, || {
        // SAFETY: as above.
        unsafe { real(pd, addr, len, access) }
    })
}

/// `ibv_reg_mr@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_reg_mr`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_reg_mr(
    pd: *mut c_void,
    addr: *mut c_void,
    len: usize,
    access: c_int,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { reg_mr_with(&real::REG_MR, pd, addr, len, access) }
}

/// `ibv_reg_mr@IBVERBS_1.0`
///
/// # Safety
/// Called by C with `ibv_reg_mr`'s 1.0 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_reg_mr_1_0(
    pd: *mut c_void,
    addr: *mut c_void,
    len: usize,
    access: c_int,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { reg_mr_with(&real::REG_MR_1_0, pd, addr, len, access) }
}

/// `ibv_reg_mr_iova@@IBVERBS_1.7`
///
/// # Safety
/// Called by C with `ibv_reg_mr_iova`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_reg_mr_iova(
    pd: *mut c_void,
    addr: *mut c_void,
    len: usize,
    iova: u64,
    access: c_int,
) -> *mut c_void {
    // SAFETY: REG_MR_IOVA names ibv_reg_mr_iova.
    let Some(real) = (unsafe { resolve::<RegMrIova>(&real::REG_MR_IOVA) }) else {
        return std::ptr::null_mut();
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's arguments.
        return unsafe { real(pd, addr, len, iova, access) };
    };
    admit_and_register_mr(len as u64, || {
        // SAFETY: as above.
        unsafe { real(pd, addr, len, iova, access) }
    })
}

/// `ibv_reg_mr_iova2@@IBVERBS_1.8`: also what `verbs.h` routes `ibv_reg_mr` to when the
/// access flags are not a compile-time constant.
///
/// # Safety
/// Called by C with `ibv_reg_mr_iova2`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_reg_mr_iova2(
    pd: *mut c_void,
    addr: *mut c_void,
    len: usize,
    iova: u64,
    access: u32,
) -> *mut c_void {
    // SAFETY: REG_MR_IOVA2 names ibv_reg_mr_iova2.
    let Some(real) = (unsafe { resolve::<RegMrIova2>(&real::REG_MR_IOVA2) }) else {
        return std::ptr::null_mut();
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's arguments.
        return unsafe { real(pd, addr, len, iova, access) };
    };
    admit_and_register_mr(len as u64, || {
        // SAFETY: as above.
        unsafe { real(pd, addr, len, iova, access) }
    })
}

/// `ibv_reg_dmabuf_mr@@IBVERBS_1.12`
///
/// # Safety
/// Called by C with `ibv_reg_dmabuf_mr`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_reg_dmabuf_mr(
    pd: *mut c_void,
    offset: u64,
    len: usize,
    iova: u64,
    fd: c_int,
    access: c_int,
) -> *mut c_void {
    // SAFETY: REG_DMABUF_MR names ibv_reg_dmabuf_mr.
    let Some(real) = (unsafe { resolve::<RegDmabufMr>(&real::REG_DMABUF_MR) }) else {
        return std::ptr::null_mut();
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's arguments.
        return unsafe { real(pd, offset, len, iova, fd, access) };
    };
    admit_and_register_mr(len as u64, || {
        // SAFETY: as above.
        unsafe { real(pd, offset, len, iova, fd, access) }
    })
}

/// `ibv_rereg_mr@@IBVERBS_1.1`: a changed translation changes the pinned length.
///
/// # Safety
/// Called by C with `ibv_rereg_mr`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_rereg_mr(
    mr: *mut c_void,
    flags: c_int,
    pd: *mut c_void,
    addr: *mut c_void,
    len: usize,
    access: c_int,
) -> c_int {
    // SAFETY: REREG_MR names ibv_rereg_mr.
    let Some(real) = (unsafe { resolve::<ReregMr>(&real::REREG_MR) }) else {
        return libc::ENOSYS;
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's arguments.
        return unsafe { real(mr, flags, pd, addr, len, access) };
    };
    // SAFETY: as above.
    let ret = unsafe { real(mr, flags, pd, addr, len, access) };
    if ret == 0 && !mr.is_null() && config().enabled {
        // SAFETY: after a successful rereg, `mr` is a valid ibv_mr with its new length.
        let new_len = unsafe { (*mr.cast::<IbvMr>()).length } as u64;
        quietly(|| with_process(|p| p.resize_mr(mr as usize, new_len)));
    }
    ret
}

unsafe fn dereg_mr_with(f: &RealFn, mr: *mut c_void) -> c_int {
    // SAFETY: `f` names an ibv_dereg_mr.
    let Some(real) = (unsafe { resolve::<DeregMr>(f) }) else {
        return libc::ENOSYS;
    };
    let Some(_reentry) = Reentry::enter() else {
        // SAFETY: the real verb with the caller's argument.
        return unsafe { real(mr) };
    };
    // SAFETY: as above.
    let ret = unsafe { real(mr) };
    after_destroy(ret, |p| p.release_mr(mr as usize))
}

/// `ibv_dereg_mr@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_dereg_mr`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_dereg_mr(mr: *mut c_void) -> c_int {
    // SAFETY: same contract.
    unsafe { dereg_mr_with(&real::DEREG_MR, mr) }
}

/// `ibv_dereg_mr@IBVERBS_1.0`
///
/// # Safety
/// Called by C with `ibv_dereg_mr`'s 1.0 contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_dereg_mr_1_0(mr: *mut c_void) -> c_int {
    // SAFETY: same contract.
    unsafe { dereg_mr_with(&real::DEREG_MR_1_0, mr) }
}

// ---------------------------------------------------------------------- devices, CQs, PDs

/// `ibv_open_device@@IBVERBS_1.1`: patches the new context's create_qp_ex / create_cq_ex.
///
/// # Safety
/// Called by C with `ibv_open_device`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_open_device(dev: *mut c_void) -> *mut c_void {
    // SAFETY: OPEN_DEVICE names ibv_open_device.
    let Some(real) = (unsafe { resolve::<OpenDevice>(&real::OPEN_DEVICE) }) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real verb with the caller's argument.
    let ctx = unsafe { real(dev) };
    if !ctx.is_null() && config().enabled {
        let saved = errno();
        // SAFETY: `ctx` was just returned by the real ibv_open_device.
        quietly(|| unsafe { ops::patch(ctx) });
        set_errno(saved);
    }
    ctx
}

/// `ibv_close_device@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_close_device`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_close_device(ctx: *mut c_void) -> c_int {
    // SAFETY: CLOSE_DEVICE names ibv_close_device.
    let Some(real) = (unsafe { resolve::<CloseDevice>(&real::CLOSE_DEVICE) }) else {
        return -1;
    };
    quietly(|| ops::forget(ctx));
    // SAFETY: the real verb with the caller's argument.
    unsafe { real(ctx) }
}

/// `ibv_create_cq@@IBVERBS_1.1` (counted, not capped)
///
/// # Safety
/// Called by C with `ibv_create_cq`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_create_cq(
    ctx: *mut c_void,
    cqe: c_int,
    user: *mut c_void,
    channel: *mut c_void,
    vector: c_int,
) -> *mut c_void {
    // SAFETY: CREATE_CQ names ibv_create_cq.
    let Some(real) = (unsafe { resolve::<CreateCq>(&real::CREATE_CQ) }) else {
        return std::ptr::null_mut();
    };
    let reentry = Reentry::enter();
    // SAFETY: the real verb with the caller's arguments.
    let cq = unsafe { real(ctx, cqe, user, channel, vector) };
    if reentry.is_some() {
        count_cq(cq, true);
    }
    cq
}

/// `ibv_destroy_cq@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_destroy_cq`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_destroy_cq(cq: *mut c_void) -> c_int {
    // SAFETY: DESTROY_CQ names ibv_destroy_cq.
    let Some(real) = (unsafe { resolve::<DestroyCq>(&real::DESTROY_CQ) }) else {
        return libc::ENOSYS;
    };
    // SAFETY: the real verb with the caller's argument.
    let ret = unsafe { real(cq) };
    after_destroy(ret, |p| p.note_cq(cq as usize, false))
}

/// `ibv_alloc_pd@@IBVERBS_1.1` (counted, not capped)
///
/// # Safety
/// Called by C with `ibv_alloc_pd`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_alloc_pd(ctx: *mut c_void) -> *mut c_void {
    // SAFETY: ALLOC_PD names ibv_alloc_pd.
    let Some(real) = (unsafe { resolve::<AllocPd>(&real::ALLOC_PD) }) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real verb with the caller's argument.
    let pd = unsafe { real(ctx) };
    if !pd.is_null() && config().enabled {
        quietly(|| with_process(|p| p.note_pd(pd as usize, true)));
    }
    pd
}

/// `ibv_dealloc_pd@@IBVERBS_1.1`
///
/// # Safety
/// Called by C with `ibv_dealloc_pd`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_ibv_dealloc_pd(pd: *mut c_void) -> c_int {
    // SAFETY: DEALLOC_PD names ibv_dealloc_pd.
    let Some(real) = (unsafe { resolve::<DeallocPd>(&real::DEALLOC_PD) }) else {
        return libc::ENOSYS;
    };
    // SAFETY: the real verb with the caller's argument.
    let ret = unsafe { real(pd) };
    after_destroy(ret, |p| p.note_pd(pd as usize, false))
}

/// The library's own count of what this process holds: QPs, MRs, MR bytes, CQs, PDs, in
/// that order, into `out[0..5]`. For diagnostics and tests (look it up with `dlsym`, so
/// the caller also runs without the library). Returns 0, or -1 if `out` is NULL.
///
/// # Safety
/// `out` points to at least five writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdmaq_intercept_counts(out: *mut u64) -> c_int {
    if out.is_null() {
        return -1;
    }
    let c = quietly(crate::global::counts).unwrap_or_default();
    for (i, v) in [c.qps, c.mrs, c.mr_bytes, c.cqs, c.pds]
        .into_iter()
        .enumerate()
    {
        // SAFETY: the caller provides five slots.
        unsafe { out.add(i).write(v) };
    }
    0
}

// The exported names and versions, as libibverbs has them (see `libibverbs.map`).
std::arch::global_asm!(
    ".symver rdmaq_ibv_create_qp, ibv_create_qp@@IBVERBS_1.1",
    ".symver rdmaq_ibv_create_qp_1_0, ibv_create_qp@IBVERBS_1.0",
    ".symver rdmaq_ibv_destroy_qp, ibv_destroy_qp@@IBVERBS_1.1",
    ".symver rdmaq_ibv_destroy_qp_1_0, ibv_destroy_qp@IBVERBS_1.0",
    ".symver rdmaq_ibv_reg_mr, ibv_reg_mr@@IBVERBS_1.1",
    ".symver rdmaq_ibv_reg_mr_1_0, ibv_reg_mr@IBVERBS_1.0",
    ".symver rdmaq_ibv_reg_mr_iova, ibv_reg_mr_iova@@IBVERBS_1.7",
    ".symver rdmaq_ibv_reg_mr_iova2, ibv_reg_mr_iova2@@IBVERBS_1.8",
    ".symver rdmaq_ibv_reg_dmabuf_mr, ibv_reg_dmabuf_mr@@IBVERBS_1.12",
    ".symver rdmaq_ibv_rereg_mr, ibv_rereg_mr@@IBVERBS_1.1",
    ".symver rdmaq_ibv_dereg_mr, ibv_dereg_mr@@IBVERBS_1.1",
    ".symver rdmaq_ibv_dereg_mr_1_0, ibv_dereg_mr@IBVERBS_1.0",
    ".symver rdmaq_ibv_open_device, ibv_open_device@@IBVERBS_1.1",
    ".symver rdmaq_ibv_close_device, ibv_close_device@@IBVERBS_1.1",
    ".symver rdmaq_ibv_create_cq, ibv_create_cq@@IBVERBS_1.1",
    ".symver rdmaq_ibv_destroy_cq, ibv_destroy_cq@@IBVERBS_1.1",
    ".symver rdmaq_ibv_alloc_pd, ibv_alloc_pd@@IBVERBS_1.1",
    ".symver rdmaq_ibv_dealloc_pd, ibv_dealloc_pd@@IBVERBS_1.1",
);
