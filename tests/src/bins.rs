//! Finding the workspace's binaries from a test: they sit beside the test executable's
//! directory (`target/<profile>/`).

use std::path::PathBuf;

/// The build directory holding the workspace's binaries (`target/<profile>/`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RDMAQ_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("the test's directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("target/<profile>").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of workspace binary `name`; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RDMAQ_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not built next to {}; run `cargo build --workspace` first",
        exe.display()
    )
}
