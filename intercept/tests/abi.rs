//! The struct offsets in `src/ffi.rs` and the QP type values in `rdmaq_model::qpt` must
//! match the system's `verbs.h`: a C program compiled against it prints them, and this test
//! compares.

use std::process::Command;

use rdmaq_intercept::ffi;
use rdmaq_model::qpt;

#[test]
fn offsets_match_the_system_verbs_h() {
    let dir = std::env::temp_dir().join(format!("rdmaq-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("offsets.c");
    std::fs::write(
        &src,
        r#"
#include <stdio.h>
#include <stddef.h>
#include <infiniband/verbs.h>
int main(void) {
    size_t c = offsetof(struct verbs_context, context);
    printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\n",
        offsetof(struct ibv_context, abi_compat), sizeof(struct ibv_context),
        c - offsetof(struct verbs_context, sz),
        c - offsetof(struct verbs_context, create_qp_ex),
        c - offsetof(struct verbs_context, create_cq_ex),
        offsetof(struct ibv_qp_init_attr, cap), offsetof(struct ibv_qp_init_attr, qp_type),
        offsetof(struct ibv_qp_init_attr_ex, cap), offsetof(struct ibv_qp_init_attr_ex, qp_type),
        offsetof(struct ibv_qp_init_attr_ex, comp_mask), offsetof(struct ibv_qp_init_attr_ex, pd),
        offsetof(struct ibv_mr, length), (size_t)IBV_QP_INIT_ATTR_PD,
        (size_t)IBV_REREG_MR_CHANGE_TRANSLATION, (size_t)(-IBV_REREG_MR_ERR_INPUT),
        (size_t)IBV_QPT_RC, (size_t)IBV_QPT_UC, (size_t)IBV_QPT_UD, (size_t)IBV_QPT_RAW_PACKET,
        (size_t)IBV_QPT_XRC_SEND, (size_t)IBV_QPT_XRC_RECV);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.join("offsets");
    let status = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(
        status.success(),
        "compiling against verbs.h failed (libibverbs-dev missing?)"
    );
    let out = Command::new(&exe).output().unwrap();
    let c: Vec<usize> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let rust = [
        ffi::CONTEXT_ABI_COMPAT_OFFSET,
        ffi::CONTEXT_SIZE,
        ffi::VCTX_SZ_BEFORE_CONTEXT,
        ffi::VCTX_CREATE_QP_EX_BEFORE_CONTEXT,
        ffi::VCTX_CREATE_CQ_EX_BEFORE_CONTEXT,
        std::mem::offset_of!(ffi::IbvQpInitAttr, cap),
        std::mem::offset_of!(ffi::IbvQpInitAttr, qp_type),
        std::mem::offset_of!(ffi::IbvQpInitAttrEx, cap),
        std::mem::offset_of!(ffi::IbvQpInitAttrEx, qp_type),
        std::mem::offset_of!(ffi::IbvQpInitAttrEx, comp_mask),
        std::mem::offset_of!(ffi::IbvQpInitAttrEx, pd),
        std::mem::offset_of!(ffi::IbvMr, length),
        ffi::IBV_QP_INIT_ATTR_PD as usize,
        ffi::IBV_REREG_MR_CHANGE_TRANSLATION as usize,
        (-ffi::IBV_REREG_MR_ERR_INPUT) as usize,
        qpt::RC as usize,
        qpt::UC as usize,
        qpt::UD as usize,
        qpt::RAW_PACKET as usize,
        qpt::XRC_SEND as usize,
        qpt::XRC_RECV as usize,
    ];
    assert_eq!(c, rust, "C (left) and src/ffi.rs (right) disagree");
    let _ = std::fs::remove_dir_all(dir);
}
