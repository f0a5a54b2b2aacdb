//! rdmaq's kernel-side monitor of RDMA object lifetimes (see DESIGN.md, "Kernel monitor").
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, map},
    maps::HashMap,
    programs::ProbeContext,
};
use rdmaq_ebpf_common::MAX_PROCESSES;

/// `ib_create_qp_user` calls per tgid.
#[map]
static QP_CREATE_CALLS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// Fires for every user QP creation, whether the command came by write() or ioctl.
#[kprobe]
pub fn ib_create_qp_user(_ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match QP_CREATE_CALLS.get_ptr_mut(&tgid) {
        // SAFETY: the pointer comes from the map lookup and stays valid for this program
        // run; a racing increment from another CPU may be lost, which a counter tolerates.
        Some(count) => unsafe { *count += 1 },
        None => {
            // Another CPU may insert first; losing one count then is acceptable here.
            let _ = QP_CREATE_CALLS.insert(&tgid, &1, 0);
        }
    }
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
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
