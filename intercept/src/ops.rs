//! `ibv_create_qp_ex` and `ibv_create_cq_ex` are static inline functions in `verbs.h` that
//! call through the device context's `verbs_context` operations, so no symbol interposition
//! sees them. After `ibv_open_device`, the library replaces those two operations in the new
//! context with wrappers that admit and count, and keeps the originals per context.
//! `post_send` / `post_recv` are not touched: no configured limit needs the data path.

use std::{collections::HashMap, ffi::c_void};

use crate::{
    ffi::{
        CONTEXT_ABI_COMPAT_OFFSET, CONTEXT_SIZE, CreateCqExFn, CreateQpExFn, IbvQpInitAttrEx,
        VCTX_CREATE_CQ_EX_BEFORE_CONTEXT, VCTX_CREATE_QP_EX_BEFORE_CONTEXT, VCTX_SZ_BEFORE_CONTEXT,
        VERBS_ABI_IS_EXTENDED,
    },
    statics::{Originals, PATCHED},
    verbs::{Reentry, admit_and_create_qp, count_cq},
};

fn originals(ctx: *mut c_void) -> Option<Originals> {
    PATCHED.lock().as_ref()?.get(&(ctx as usize)).copied()
}

/// Replaces one operation slot (`before` bytes before the context) if the provider's
/// `verbs_context` is large enough to have it and it is set; returns the original.
///
/// # Safety
/// `ctx` is a live `ibv_context` embedded in a `verbs_context` (checked by the caller), and
/// `T` is the slot's function pointer type.
unsafe fn swap_op<T: Copy>(ctx: *mut c_void, before: usize, new: T) -> Option<T> {
    let base = ctx.cast::<u8>();
    // SAFETY: `sz` sits just before the embedded context in every verbs_context.
    let sz = unsafe { base.sub(VCTX_SZ_BEFORE_CONTEXT).cast::<usize>().read() };
    // The op exists if the provider's verbs_context reaches back that far (`verbs_get_ctx_op`).
    if sz < before + CONTEXT_SIZE {
        return None;
    }
    // SAFETY: the slot is within the provider's verbs_context (checked with `sz`), holds a
    // nullable function pointer of type T, and is aligned like any pointer field.
    unsafe {
        let slot = base.sub(before).cast::<Option<T>>();
        let old = slot.read()?;
        slot.write(Some(new));
        Some(old)
    }
}

/// Patches a freshly opened context.
///
/// # Safety
/// `ctx` is a context just returned by the real `ibv_open_device`.
pub unsafe fn patch(ctx: *mut c_void) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: abi_compat is a field of every ibv_context.
    let abi = unsafe {
        ctx.cast::<u8>()
            .add(CONTEXT_ABI_COMPAT_OFFSET)
            .cast::<usize>()
            .read()
    };
    if abi != VERBS_ABI_IS_EXTENDED {
        return;
    }
    // SAFETY: an extended context is embedded in a verbs_context; the wrappers have the
    // slots' exact types.
    let originals = unsafe {
        Originals {
            create_qp_ex: swap_op::<CreateQpExFn>(
                ctx,
                VCTX_CREATE_QP_EX_BEFORE_CONTEXT,
                create_qp_ex,
            ),
            create_cq_ex: swap_op::<CreateCqExFn>(
                ctx,
                VCTX_CREATE_CQ_EX_BEFORE_CONTEXT,
                create_cq_ex,
            ),
        }
    };
    PATCHED
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(ctx as usize, originals);
}

/// The context is being closed; its address may be reused by a later one.
pub fn forget(ctx: *mut c_void) {
    if let Some(map) = PATCHED.lock().as_mut() {
        map.remove(&(ctx as usize));
    }
}

unsafe extern "C" fn create_qp_ex(ctx: *mut c_void, attr: *mut IbvQpInitAttrEx) -> *mut c_void {
    let Some(real) = originals(ctx).and_then(|o| o.create_qp_ex) else {
        // SAFETY: errno is thread-local and always writable.
        unsafe { *libc::__errno_location() = libc::EOPNOTSUPP };
        return std::ptr::null_mut();
    };
    let Some(reentry) = Reentry::enter() else {
        // SAFETY: the provider's own operation, with the caller's arguments.
        return unsafe { real(ctx, attr) };
    };
    // SAFETY: the caller passes a valid ibv_qp_init_attr_ex, whose leading fields the
    // library reads and whose work-request depths it may lower.
    let (cap, qp_type) = unsafe { (&mut (*attr).cap, (*attr).qp_type) };
    let qp = admit_and_create_qp(cap, qp_type, || {
        // SAFETY: as above.
        unsafe { real(ctx, attr) }
    });
    drop(reentry);
    qp
}

unsafe extern "C" fn create_cq_ex(ctx: *mut c_void, attr: *mut c_void) -> *mut c_void {
    let Some(real) = originals(ctx).and_then(|o| o.create_cq_ex) else {
        // SAFETY: errno is thread-local and always writable.
        unsafe { *libc::__errno_location() = libc::EOPNOTSUPP };
        return std::ptr::null_mut();
    };
    // SAFETY: the provider's own operation, with the caller's arguments.
    let cq = unsafe { real(ctx, attr) };
    count_cq(cq, true);
    cq
}
