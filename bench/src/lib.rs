//! Support for rdmaq's benchmark tools (the binaries of this crate, each with `--help`):
//! the etcd cluster `grant-bench` compares against, and small statistics helpers. The lab
//! and coordinator clusters they run come from `rdmaq_lab` (the tests' harness).
#![forbid(unsafe_code)]

pub mod etcd;
pub mod stages;

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes a benchmark's results as JSON to `path` (its directory made if missing), for the
/// plot script (`scripts/plot-bench.py`).
pub fn write_results(path: &str, results: &impl serde::Serialize) {
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let json = serde_json::to_string_pretty(results).expect("results serialize");
    std::fs::write(path, json).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    eprintln!("results in {path}");
}
