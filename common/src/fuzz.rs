//! Time-bounded property fuzzing that runs in the normal test command: each fuzz target
//! draws inputs from a proptest strategy until its time budget is spent (a short default
//! in CI, `RDMAQ_FUZZ_SECS` for long runs), shrinking any failure to a minimal input.
//!
//! ```sh
//! RDMAQ_FUZZ_SECS=600 cargo test --release --workspace fuzz_
//! ```

use std::time::{Duration, Instant};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, TestCaseError, TestRunner},
};

/// Seconds per target when `RDMAQ_FUZZ_SECS` is not set.
const DEFAULT_SECS: f64 = 2.0;

fn budget() -> Duration {
    let secs = std::env::var("RDMAQ_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs_f64(secs)
}

/// Runs `test` on inputs from `strategy` until the time budget is spent; panics with the
/// shrunk failing input if any case fails or panics.
pub fn run_for<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    const BATCH: u32 = 256;
    let budget = budget();
    let deadline = Instant::now() + budget;
    let mut cases = 0u64;
    while cases == 0 || Instant::now() < deadline {
        // A runner runs its cases once; each batch gets a fresh one with a fresh random seed.
        let mut runner = TestRunner::new(Config {
            cases: BATCH,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name} failed after {cases} cases: {e}");
        }
        cases += u64::from(BATCH);
    }
    eprintln!("fuzz target {name}: {cases} cases in {budget:?}, no failure");
}

/// TOML-ish documents over `keys` (dotted keys become tables): well-formed lines with
/// values of every type and of wrong types, mixed with lines of junk. For config parsers.
pub fn toml_documents(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    use proptest::prelude::*;
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[ -~]{0,12}\"",
        Just("\"0666\"".to_string()),
        Just("\"127.0.0.1:7100\"".to_string()),
        Just("[\"a:1\", \"b:2\"]".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("1.5".to_string()),
    ];
    let key = prop_oneof![
        4 => proptest::sample::select(keys).prop_map(String::from),
        1 => "[a-z_]{1,10}",
    ];
    let line = prop_oneof![
        8 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => proptest::sample::select(keys).prop_map(|k| format!("[{k}]")),
        1 => "[ -~]{0,20}",
    ];
    proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

/// The property every config parser's errors must have: the key named is one the document
/// wrote, or a known key it lacks (or the document itself, for a syntax error), with a
/// reason.
pub fn config_error_names_a_key(
    doc: &str,
    keys: &[&str],
    key: &str,
    reason: &str,
) -> Result<(), TestCaseError> {
    let last = key.rsplit('.').next().unwrap_or(key);
    let named = doc.contains(last) || keys.contains(&key) || key == "<document>";
    proptest::prop_assert!(
        named && !reason.is_empty(),
        "key {key:?} for {doc:?}: {reason}"
    );
    Ok(())
}
