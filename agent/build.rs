//! Builds the eBPF programs (`ebpf/programs`) for `bpfel-unknown-none` with the stable
//! toolchain (`RUSTC_BOOTSTRAP=1 -Z build-std=core`) and `bpf-linker`, into
//! `target/bpf/`, and tells the agent where the object is (`RDMAQ_EBPF_OBJECT`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("agent/ lives in the workspace root");
    let programs = root.join("ebpf/programs");
    let common = root.join("ebpf/common");
    for dir in [&programs.join("src"), &common.join("src")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        programs.join("Cargo.toml").display()
    );

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bpf");

    if which("bpf-linker").is_none() {
        panic!(
            "bpf-linker is not on PATH; run scripts/install-deps.sh (it installs bpf-linker \
             built against LLVM 22) before building rdmaq-agent"
        );
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&programs)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        );
    // The outer build's compiler wrappers (clippy-driver, sccache) and host flags must not
    // leak into a build for another target.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the eBPF programs");
    assert!(status.success(), "building ebpf/programs failed: {status}");

    let object = target_dir.join("bpfel-unknown-none/release/rdmaq-ebpf");
    assert!(object.exists(), "{} was not produced", object.display());
    println!("cargo:rustc-env=RDMAQ_EBPF_OBJECT={}", object.display());
}

fn which(program: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| Path::new(candidate).is_file())
    })
}
