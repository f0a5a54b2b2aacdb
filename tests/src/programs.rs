//! Small C programs the tests run against the real libibverbs (compiled on demand with the
//! system's `cc`, into the build tree so lab nodes see them too).

use std::{path::PathBuf, process::Command, sync::OnceLock};

fn build(name: &str, source: &str, libs: &[&str]) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(source);
    let out_dir = crate::bins::bin_dir().join("c-programs");
    std::fs::create_dir_all(&out_dir).expect("creating the C programs' directory");
    let out = out_dir.join(name);
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .args(libs)
        .status()
        .expect("running cc (install build-essential and libibverbs-dev: scripts/install-deps.sh)");
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

/// `intercept/tests/c/verbs_check.c`, built once per test process.
pub fn verbs_check() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build(
            "verbs_check",
            "intercept/tests/c/verbs_check.c",
            &["-libverbs", "-lpthread", "-ldl"],
        )
    })
    .clone()
}

/// `intercept/tests/c/verbs_bench.c`, built once per process.
pub fn verbs_bench() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build(
            "verbs_bench",
            "intercept/tests/c/verbs_bench.c",
            &["-libverbs"],
        )
    })
    .clone()
}
