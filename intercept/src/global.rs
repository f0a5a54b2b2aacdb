//! Process-wide state: the configuration (read once), the admission ledger behind one lock,
//! the per-thread reentrancy guard, and the fork and exit hooks. Nothing here runs at load
//! time: everything starts on the first interposed call.

use std::{
    cell::Cell,
    sync::{Once, OnceLock},
};

use parking_lot::Mutex;

use crate::{admit::Process, config::Config, log::log_at, ops};

static CONFIG: OnceLock<Config> = OnceLock::new();
static PROCESS: Mutex<Option<Process>> = Mutex::new(None);
static HOOKS: Once = Once::new();

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

/// Runs `f` on the process's ledger (created on first use).
pub fn with_process<R>(f: impl FnOnce(&mut Process) -> R) -> R {
    let cfg = config();
    let mut guard = PROCESS.lock();
    f(guard.get_or_insert_with(|| Process::new(cfg.clone())))
}

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as inside an interposed verb. libibverbs calls some exported verbs
/// from inside others (`ibv_reg_mr` calls `ibv_reg_mr_iova2`; a provider's create_qp may use
/// `create_qp_ex`): only the outermost call is admitted and counted.
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

// Fork: take every lock so that no other thread holds one at the moment of the fork, then
// release them in the parent; the child releases them and starts with a fresh ledger (its
// own counts, its own agent connection and host table slot).

extern "C" fn before_fork() {
    std::mem::forget(PROCESS.lock());
    ops::lock_for_fork();
    crate::log::lock_for_fork();
}

extern "C" fn after_fork_parent() {
    // SAFETY: before_fork locked each of these in this thread and forgot the guards.
    unsafe {
        crate::log::unlock_after_fork();
        ops::unlock_after_fork();
        PROCESS.force_unlock();
    }
}

extern "C" fn after_fork_child() {
    // SAFETY: as in the parent: this (only) thread of the child holds the locks.
    unsafe {
        crate::log::unlock_after_fork();
        ops::unlock_after_fork();
        PROCESS.force_unlock();
    }
    // Dropping the parent's ledger closes the child's copies of the agent socket and the
    // host table file; the parent's stay open.
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

/// What the process holds now, by the library's count.
pub fn counts() -> crate::admit::Counts {
    PROCESS
        .lock()
        .as_ref()
        .map(Process::counts)
        .unwrap_or_default()
}
