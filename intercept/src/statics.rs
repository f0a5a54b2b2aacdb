//! The library's process-wide state, all of it: the configuration (read once), the
//! process's admissions behind one lock, the original operations of every patched device
//! context, and the fork and exit hooks that keep them consistent. Nothing here runs at
//! load time: everything starts on the first interposed call.

use std::{
    collections::HashMap,
    sync::{Once, OnceLock},
};

use parking_lot::Mutex;

use crate::{
    config::Config,
    ffi::{CreateCqExFn, CreateQpExFn},
    log::log_at,
    process::{Counts, Process},
};

static CONFIG: OnceLock<Config> = OnceLock::new();
static PROCESS: Mutex<Option<Process>> = Mutex::new(None);
static HOOKS: Once = Once::new();

/// A patched context's own operations (see ops.rs).
#[derive(Clone, Copy)]
pub struct Originals {
    pub create_qp_ex: Option<CreateQpExFn>,
    pub create_cq_ex: Option<CreateCqExFn>,
}

/// Patched contexts by address.
pub static PATCHED: Mutex<Option<HashMap<usize, Originals>>> = Mutex::new(None);

pub fn config() -> &'static Config {
    let cfg = CONFIG.get_or_init(Config::from_env);
    HOOKS.call_once(|| {
        for p in Config::problems() {
            log_at!(cfg, Warn, "{p}");
        }
        // SAFETY: the three handlers are plain extern "C" functions that live as long as the
        // process (the library is never unloaded: see lib.rs).
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            )
        };
        // SAFETY: as above.
        unsafe { libc::atexit(at_exit) };
    });
    cfg
}

/// Runs `f` on the process's admissions (created on first use).
pub fn with_process<R>(f: impl FnOnce(&mut Process) -> R) -> R {
    let cfg = config();
    let mut guard = PROCESS.lock();
    f(guard.get_or_insert_with(|| Process::new(cfg.clone())))
}

/// What the process holds now, by the library's count.
pub fn counts() -> Counts {
    PROCESS
        .lock()
        .as_ref()
        .map(Process::counts)
        .unwrap_or_default()
}

// Fork: take every lock, in the order the code nests them (the process's admissions, then
// the patched contexts, then the log file), so that no other thread holds one at the
// moment of the fork; release them in the parent. The child releases them and starts with
// fresh admissions (its own counts, its own agent connection and host table slot).

extern "C" fn before_fork() {
    std::mem::forget(PROCESS.lock());
    std::mem::forget(PATCHED.lock());
    crate::log::lock_for_fork();
}

/// # Safety
/// Only in a fork handler after `before_fork` ran in this thread.
unsafe fn unlock_after_fork() {
    // SAFETY: before_fork locked each of these in this thread and forgot the guards.
    unsafe {
        crate::log::unlock_after_fork();
        PATCHED.force_unlock();
        PROCESS.force_unlock();
    }
}

extern "C" fn after_fork_parent() {
    // SAFETY: a fork handler, after before_fork.
    unsafe { unlock_after_fork() }
}

extern "C" fn after_fork_child() {
    // SAFETY: as in the parent: this (only) thread of the child holds the locks.
    unsafe { unlock_after_fork() }
    // Dropping the parent's admissions closes the child's copies of the agent socket and
    // the host table file; the parent's stay open.
    *PROCESS.lock() = None;
}

extern "C" fn at_exit() {
    // Another thread may be inside a verb at exit; never wait for it.
    if let Some(mut p) = PROCESS.try_lock()
        && let Some(p) = p.as_mut()
    {
        p.return_all_tokens();
    }
}
