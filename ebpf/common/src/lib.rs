//! Types shared by the kernel-side programs and user space. `#[repr(C)]` plain data only:
//! the same bytes are written by BPF and read by the agent.
#![no_std]

/// Indexes into the `CONFIG` array map: struct offsets the agent computes from the running
/// kernel's BTF at load time.
pub mod config {
    /// `offsetof(struct rdma_restrack_entry, type)`
    pub const RESTRACK_TYPE: u32 = 0;
    /// `offsetof(struct rdma_restrack_entry, user)`
    pub const RESTRACK_USER: u32 = 1;
    /// `offsetof(struct ib_mr, res)`
    pub const MR_RES: u32 = 2;
    /// `offsetof(struct ib_mr, length)`
    pub const MR_LENGTH: u32 = 3;
    /// Set to 1 once the offsets above are filled in.
    pub const READY: u32 = 4;
    pub const LEN: u32 = 8;
}

/// `RDMA_RESTRACK_MR` in `enum rdma_restrack_type`.
pub const RESTRACK_MR: u32 = 4;

/// What an event reports.
pub mod kind {
    pub const QP_CREATE: u32 = 1;
    pub const QP_DESTROY: u32 = 2;
    pub const MR_CREATE: u32 = 3;
    pub const MR_DESTROY: u32 = 4;
    // 5 was PROCESS_EXIT: objects outlive their creator's exit, so it is never sent.
    /// User memory pinned (`ib_umem_get`): MR buffers, and on most hardware the QP and CQ
    /// buffers too.
    pub const UMEM_GET: u32 = 6;
    pub const UMEM_RELEASE: u32 = 7;
}

/// One RDMA object event, sent on the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    /// The owning process (for destroys: the creator, from the object map, not `current`).
    pub tgid: u32,
    /// The kernel object's address: the key that pairs a destroy with its create.
    pub ptr: u64,
    /// MR length (MR events) or bytes pinned (umem events).
    pub bytes: u64,
}

impl Event {
    pub const SIZE: usize = 24;

    /// Decodes an event from the ring buffer's bytes (little endian, as BPF wrote it).
    pub fn from_bytes(b: &[u8]) -> Option<Event> {
        if b.len() < Self::SIZE {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        Some(Event {
            kind: u32_at(0),
            tgid: u32_at(4),
            ptr: u64_at(8),
            bytes: u64_at(16),
        })
    }
}

/// Live objects of one process, as the kernel programs count them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub qps: u64,
    pub mrs: u64,
    pub mr_bytes: u64,
    /// User memory pinned for the process's RDMA objects (`ib_umem_get`).
    pub pinned: u64,
}

/// Capacity of the object and process maps.
pub const MAX_OBJECTS: u32 = 256 * 1024;
pub const MAX_PROCESSES: u32 = 16 * 1024;
