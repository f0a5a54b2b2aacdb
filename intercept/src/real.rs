//! The real libibverbs functions behind the interposed ones. Each is resolved once, lazily
//! and thread-safely, by name and symbol version: first with `RTLD_NEXT`, then — for
//! programs that `dlopen`ed libibverbs privately (Python extensions, MPI/UCX plugins), where
//! `RTLD_NEXT` finds nothing — through the already loaded `libibverbs.so.1` itself. A symbol
//! that cannot be found is reported as `None`, never called as NULL.

use std::{
    ffi::{CStr, c_void},
    sync::atomic::{AtomicPtr, Ordering},
};

/// One real function: name, version, and the cached address.
pub struct RealFn {
    name: &'static CStr,
    version: &'static CStr,
    addr: AtomicPtr<c_void>,
}

impl RealFn {
    pub const fn new(name: &'static CStr, version: &'static CStr) -> Self {
        RealFn {
            name,
            version,
            addr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The function's address, or `None` if no loaded libibverbs has it.
    pub fn get(&self) -> Option<*mut c_void> {
        let cached = self.addr.load(Ordering::Acquire);
        if !cached.is_null() {
            return Some(cached);
        }
        let found = lookup(self.name, self.version)?;
        // Racing threads find the same address; storing it twice is harmless.
        self.addr.store(found, Ordering::Release);
        Some(found)
    }

    pub fn name(&self) -> &'static str {
        self.name.to_str().unwrap_or("?")
    }
}

fn lookup(name: &CStr, version: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlvsym only reads the two NUL-terminated strings; RTLD_NEXT is a valid
    // pseudo-handle.
    let next = unsafe { libc::dlvsym(libc::RTLD_NEXT, name.as_ptr(), version.as_ptr()) };
    if !next.is_null() {
        return Some(next);
    }
    // SAFETY: RTLD_NOLOAD only returns a handle if the library is already loaded; it never
    // loads (and so never runs constructors from inside an interposed call).
    let handle = unsafe {
        libc::dlopen(
            c"libibverbs.so.1".as_ptr(),
            libc::RTLD_NOLOAD | libc::RTLD_LAZY,
        )
    };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a live handle from dlopen; the strings are NUL-terminated.
    let mut sym = unsafe { libc::dlvsym(handle, name.as_ptr(), version.as_ptr()) };
    if sym.is_null() {
        // SAFETY: as above.
        sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
    }
    // SAFETY: balances the RTLD_NOLOAD dlopen; the library stays loaded (its owner holds
    // its own reference), so `sym` stays valid.
    unsafe { libc::dlclose(handle) };
    (!sym.is_null()).then_some(sym)
}

macro_rules! real_fns {
    ($($ident:ident = $name:literal @ $ver:literal;)*) => {
        $(pub static $ident: RealFn = RealFn::new($name, $ver);)*
    };
}

real_fns! {
    CREATE_QP = c"ibv_create_qp" @ c"IBVERBS_1.1";
    CREATE_QP_1_0 = c"ibv_create_qp" @ c"IBVERBS_1.0";
    DESTROY_QP = c"ibv_destroy_qp" @ c"IBVERBS_1.1";
    DESTROY_QP_1_0 = c"ibv_destroy_qp" @ c"IBVERBS_1.0";
    REG_MR = c"ibv_reg_mr" @ c"IBVERBS_1.1";
    REG_MR_1_0 = c"ibv_reg_mr" @ c"IBVERBS_1.0";
    REG_MR_IOVA = c"ibv_reg_mr_iova" @ c"IBVERBS_1.7";
    REG_MR_IOVA2 = c"ibv_reg_mr_iova2" @ c"IBVERBS_1.8";
    REG_DMABUF_MR = c"ibv_reg_dmabuf_mr" @ c"IBVERBS_1.12";
    REREG_MR = c"ibv_rereg_mr" @ c"IBVERBS_1.1";
    DEREG_MR = c"ibv_dereg_mr" @ c"IBVERBS_1.1";
    DEREG_MR_1_0 = c"ibv_dereg_mr" @ c"IBVERBS_1.0";
    OPEN_DEVICE = c"ibv_open_device" @ c"IBVERBS_1.1";
    CLOSE_DEVICE = c"ibv_close_device" @ c"IBVERBS_1.1";
    CREATE_CQ = c"ibv_create_cq" @ c"IBVERBS_1.1";
    DESTROY_CQ = c"ibv_destroy_cq" @ c"IBVERBS_1.1";
    ALLOC_PD = c"ibv_alloc_pd" @ c"IBVERBS_1.1";
    DEALLOC_PD = c"ibv_dealloc_pd" @ c"IBVERBS_1.1";
}
