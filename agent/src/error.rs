//! The agent's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config key `{key}`: {reason}")]
    Config { key: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("eBPF: {0}")]
    Ebpf(String),
}
