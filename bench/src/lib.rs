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
