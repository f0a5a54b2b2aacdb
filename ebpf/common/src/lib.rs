//! Types shared by the kernel-side programs and user space. `#[repr(C)]` plain data only:
//! the same bytes are written by BPF and read by the agent.
#![no_std]
#![forbid(unsafe_code)]

/// Name of the map counting `ib_create_qp_user` calls per tgid.
pub const QP_CREATE_CALLS_MAP: &str = "QP_CREATE_CALLS";

/// Capacity of the per-process maps.
pub const MAX_PROCESSES: u32 = 16 * 1024;
