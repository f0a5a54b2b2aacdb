//! The few libibverbs types the library reads or patches, laid out as in rdma-core's
//! `verbs.h` (only the leading fields it needs). `tests/abi.rs` compiles a C program against
//! the system's `verbs.h` and checks every offset here.

use std::ffi::{c_int, c_void};

/// `IBV_QP_INIT_ATTR_PD`: an `ibv_create_qp_ex` with only this mask goes to `ibv_create_qp`.
pub const IBV_QP_INIT_ATTR_PD: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IbvQpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`; also the prefix of `struct ibv_qp_init_attr_ex`.
#[repr(C)]
#[derive(Debug)]
pub struct IbvQpInitAttr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut c_void,
    pub recv_cq: *mut c_void,
    pub srq: *mut c_void,
    pub cap: IbvQpCap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
}

/// The leading fields of `struct ibv_qp_init_attr_ex`: the fields of `ibv_qp_init_attr`
/// flat (not nested: `comp_mask` fills what would be the nested struct's tail padding).
#[repr(C)]
#[derive(Debug)]
pub struct IbvQpInitAttrEx {
    pub qp_context: *mut c_void,
    pub send_cq: *mut c_void,
    pub recv_cq: *mut c_void,
    pub srq: *mut c_void,
    pub cap: IbvQpCap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
    pub comp_mask: u32,
    pub pd: *mut c_void,
}

/// The leading fields of `struct ibv_mr`.
#[repr(C)]
#[derive(Debug)]
pub struct IbvMr {
    pub context: *mut c_void,
    pub pd: *mut c_void,
    pub addr: *mut c_void,
    pub length: usize,
}

/// Offset of `abi_compat` in `struct ibv_context`; `UINTPTR_MAX` there marks a context
/// embedded in a `struct verbs_context`.
pub const CONTEXT_ABI_COMPAT_OFFSET: usize = 320;
pub const VERBS_ABI_IS_EXTENDED: usize = usize::MAX;
/// `sizeof(struct ibv_context)`.
pub const CONTEXT_SIZE: usize = 328;

/// `struct verbs_context` grows towards lower addresses, so its fields sit at fixed
/// distances *before* the embedded `struct ibv_context` whatever the rdma-core version:
/// these are `offsetof(verbs_context, context) - offsetof(verbs_context, FIELD)`.
pub const VCTX_SZ_BEFORE_CONTEXT: usize = 8;
pub const VCTX_CREATE_QP_EX_BEFORE_CONTEXT: usize = 56;
pub const VCTX_CREATE_CQ_EX_BEFORE_CONTEXT: usize = 120;

pub type CreateQpExFn = unsafe extern "C" fn(*mut c_void, *mut IbvQpInitAttrEx) -> *mut c_void;
pub type CreateCqExFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void;

/// `ibv_rereg_mr` flag: the MR's address range (and so its pinned length) changes.
pub const IBV_REREG_MR_CHANGE_TRANSLATION: c_int = 1 << 0;
/// `ibv_rereg_mr` error: invalid input, the old MR is unchanged and still valid.
pub const IBV_REREG_MR_ERR_INPUT: c_int = -1;
