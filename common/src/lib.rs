//! Helpers shared by rdmaq's binaries (not wire types: those live in rdmaq-proto).
#![forbid(unsafe_code)]

pub mod config;
pub mod logging;
pub mod units;
