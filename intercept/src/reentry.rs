//! The per-thread reentrancy guard: libibverbs calls some exported verbs from inside others
//! (`ibv_reg_mr` calls `ibv_reg_mr_iova2`; a provider's create_qp may use `create_qp_ex`),
//! and only the outermost call is admitted and counted.

use std::cell::Cell;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as inside an interposed verb while it lives.
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
