//! Links librdmaq_intercept.so with libibverbs' version nodes, so that its interposed verbs
//! carry the same symbol versions as the real ones (`ibv_create_qp@@IBVERBS_1.1`, ...).

fn main() {
    let map = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libibverbs.map");
    println!("cargo:rerun-if-changed={}", map.display());
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );
}
