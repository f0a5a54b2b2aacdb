//! librdmaq_intercept.so: admission of RDMA resources inside unmodified programs, loaded
//! with LD_PRELOAD (DESIGN.md, "Interception").
//!
//! Hygiene: nothing runs at load time (no constructor: the first interposed call sets
//! things up); no panic crosses the C boundary; fork-safe (the child starts with a fresh
//! ledger); thread-safe; never unloaded (an LD_PRELOAD library lives as long as the
//! process, and the fork/exit hooks it registers point into it).

mod agent_conn;
pub mod config;
mod denial;
mod exports;
pub mod ffi;
mod host;
mod log;
mod ops;
mod process;
mod real;
mod standalone;
mod statics;
mod tokens;
mod verbs;

/// The library's own work around a verb, with the verb replaced by a stand-in that costs
/// nothing, so that `benches/bookkeeping.rs` can time it natively (the lab's VMs run under
/// software emulation, which inflates it). Not part of the C interface.
#[doc(hidden)]
pub mod bench {
    use std::ffi::c_void;

    /// One QP creation and destruction, as the interposed verbs do them; `id` stands for
    /// the QP's address. False if the creation was refused.
    pub fn qp_cycle(id: usize) -> bool {
        let mut cap = crate::ffi::IbvQpCap {
            max_send_wr: 16,
            max_recv_wr: 16,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        let qp =
            crate::verbs::admit_and_create_qp(&mut cap, rdmaq_model::qpt::RC, || id as *mut c_void);
        crate::verbs::after_destroy(0, |p| p.release_qp(id));
        !qp.is_null()
    }

    /// Admits `n` QPs as `ibv_create_qp` would (standing in for QPs `first..first + n`) and
    /// keeps them: how many the caps let through. For tests of the host-wide cap across
    /// processes and users, which need no RDMA device.
    pub fn hold_qps(first: usize, n: usize) -> usize {
        (first..first + n)
            .filter(|&id| {
                let mut cap = crate::ffi::IbvQpCap {
                    max_send_wr: 1,
                    max_recv_wr: 1,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: 0,
                };
                !crate::verbs::admit_and_create_qp(&mut cap, rdmaq_model::qpt::RC, || {
                    id as *mut c_void
                })
                .is_null()
            })
            .count()
    }

    /// One MR registration of `bytes` and its deregistration.
    pub fn mr_cycle(id: usize, bytes: u64) -> bool {
        let mr = crate::verbs::admit_and_register_mr(bytes, || id as *mut c_void);
        crate::verbs::after_destroy(0, |p| p.release_mr(id));
        !mr.is_null()
    }
}

/// The protocol version this library speaks to the agent.
pub const PROTOCOL_VERSION: u32 = rdmaq_proto::intercept::PROTOCOL_VERSION;
