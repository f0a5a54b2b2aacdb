//! Helpers shared by rdmaq's binaries (not wire types: those live in rdmaq-proto).
#![forbid(unsafe_code)]

pub mod config;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod logging;
#[cfg(feature = "tls")]
pub mod tls;
pub mod units;
