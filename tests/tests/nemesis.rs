//! The nemesis in the test suite: `rdmaq-nemesis` for 90 s of faults with a fixed seed and
//! 90 s with a random one (printed, so a failure replays with `--seed`). The checker's
//! verdict is the test's. Needs root and qemu (the soft-RoCE lab).

use std::process::Command;

/// The fixed schedule: every kind of fault at least once in 90 s.
const FIXED_SEED: u64 = 20261204;

fn nemesis(seed: Option<u64>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdmaq-nemesis"));
    // Stranded budget is held to the binary's default bound, 30 s, as in the long runs (the
    // 30-minute run 7, with findings 1–9 fixed, had none beyond 18.3 s; docs/reliability.md).
    cmd.args(["--duration", "90", "--settle", "15"]);
    if let Some(seed) = seed {
        cmd.args(["--seed", &seed.to_string()]);
    }
    let out = cmd.output().expect("running rdmaq-nemesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the nemesis run failed ({}): its schedule replays with the seed on its first line",
        stdout.lines().next().unwrap_or("no output")
    );
}

#[test]
fn the_cap_and_the_service_hold_under_a_fixed_fault_schedule() {
    rdmaq_lab::require_lab!();
    nemesis(Some(FIXED_SEED));
}

#[test]
fn the_cap_and_the_service_hold_under_a_random_fault_schedule() {
    rdmaq_lab::require_lab!();
    nemesis(None);
}
