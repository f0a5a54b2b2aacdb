//! Whether the lab can run on this machine, for the first line of every lab test: without
//! root (network namespaces, taps) or without qemu, a lab test is skipped with one line
//! saying why — unless `RDMAQ_REQUIRE_LAB=1` (the README's full test command sets it),
//! where it fails with that line instead, so that a machine that should run the lab never
//! passes without it.

/// Why the lab cannot run here, if it cannot.
pub fn missing() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces, taps, qemu)");
    }
    let qemu = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").exists()))
        .unwrap_or(false);
    if !qemu && std::env::var_os("RDMAQ_REQUIRE_LAB").is_none() {
        return Some("needs qemu-system-x86_64 (scripts/install-deps.sh installs it)");
    }
    None
}

/// True when the lab can run; otherwise prints one line naming `test` and the reason and
/// returns false, or panics with it under `RDMAQ_REQUIRE_LAB=1`.
pub fn lab_available(test: &str) -> bool {
    let Some(why) = missing() else { return true };
    let line = format!("{test}: skipped: the soft-RoCE lab {why}");
    if std::env::var("RDMAQ_REQUIRE_LAB").is_ok_and(|v| v == "1") {
        panic!("{line} (RDMAQ_REQUIRE_LAB=1)");
    }
    // Straight to the stderr descriptor: the test harness captures eprintln!, and a
    // skipped test must say so.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
    false
}

/// The first line of a lab test: returns from it, with one line saying why, when the lab
/// cannot run here.
#[macro_export]
macro_rules! require_lab {
    () => {
        fn here() {}
        let test = std::any::type_name_of_val(&here);
        if !$crate::lab::available::lab_available(test.strip_suffix("::here").unwrap_or(test)) {
            return;
        }
    };
}
