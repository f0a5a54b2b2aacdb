//! Admission around one verb, shared by the exported symbols (exports.rs) and the patched
//! context operations (ops.rs): only the outermost of nested verbs is admitted (libibverbs
//! calls some exported verbs from inside others: `ibv_reg_mr` calls `ibv_reg_mr_iova2`, a
//! provider's create_qp may use `create_qp_ex`); ask the process's admissions, call the
//! real verb, record the outcome or roll back. A panic never crosses into C: the verb then
//! runs unadmitted, as if the library were absent. `errno` is what the real verb left, or
//! the denial's.

use std::{
    cell::Cell,
    ffi::{c_int, c_void},
    panic::{AssertUnwindSafe, catch_unwind},
};

use crate::{
    denial::Denial,
    ffi::IbvQpCap,
    log::log_at,
    process::Process,
    statics::{config, with_process},
};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as inside an interposed verb while it lives (see the module doc).
pub struct Reentry(());

impl Reentry {
    /// `None` when this thread is already inside an interposed verb.
    pub fn enter() -> Option<Reentry> {
        DEPTH.with(|d| {
            let outer = d.get() == 0;
            d.set(d.get() + 1);
            if outer {
                Some(Reentry(()))
            } else {
                d.set(d.get() - 1);
                None
            }
        })
    }
}

impl Drop for Reentry {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

pub(crate) fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = e };
}

pub(crate) fn errno() -> c_int {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Runs `f` without letting a panic escape; `None` if it panicked.
pub(crate) fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// Logs a denial and sets its errno.
pub(crate) fn deny(d: &Denial) {
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
    let by = match quietly(|| with_process(|p| p.admit_qp(cap, qp_type))) {
        None => return create(),
        Some(Err(d)) => {
            deny(&d);
            return std::ptr::null_mut();
        }
        Some(Ok(by)) => by,
    };
    let qp = create();
    let saved = errno();
    quietly(|| {
        with_process(|p| match qp.is_null() {
            true => p.abort_qp(by),
            false => p.commit_qp(qp as usize, by),
        })
    });
    if !qp.is_null() {
        log_at!(config(), Debug, "qp admitted ({by:?})");
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
    let by = match quietly(|| with_process(|p| p.admit_mr(bytes))) {
        None => return register(),
        Some(Err(d)) => {
            deny(&d);
            return std::ptr::null_mut();
        }
        Some(Ok(by)) => by,
    };
    let mr = register();
    let saved = errno();
    quietly(|| {
        with_process(|p| match mr.is_null() {
            true => p.abort_mr(by, bytes),
            false => p.commit_mr(mr as usize, by, bytes),
        })
    });
    if !mr.is_null() {
        log_at!(config(), Debug, "mr of {bytes} bytes admitted ({by:?})");
    }
    set_errno(saved);
    mr
}

/// Forgets an object once its destroy verb succeeded (returned 0).
pub(crate) fn after_destroy(ret: c_int, f: impl FnOnce(&mut Process)) -> c_int {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outermost_call_enters() {
        let outer = Reentry::enter();
        assert!(outer.is_some());
        assert!(Reentry::enter().is_none(), "nested");
        drop(outer);
        assert!(Reentry::enter().is_some(), "after the outer call returned");
    }
}
