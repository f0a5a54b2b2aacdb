//! One-line log records to `RDMA_INTERCEPT_LOG_FILE_PATH`, at or above
//! `RDMA_INTERCEPT_LOG_LEVEL`. The file is opened on the first record (never in a
//! constructor) in append mode, and each record is one `write`, so lines from several
//! processes sharing the file do not interleave.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::config::{Config, Level};

static FILE: parking_lot::Mutex<Option<File>> = parking_lot::Mutex::new(None);

pub(crate) fn lock_for_fork() {
    std::mem::forget(FILE.lock());
}

/// # Safety
/// Only after `lock_for_fork` in the same thread.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: the caller locked FILE in lock_for_fork and forgot the guard.
    unsafe { FILE.force_unlock() };
}

pub fn log(cfg: &Config, level: Level, msg: std::fmt::Arguments<'_>) {
    if level < cfg.log_level {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{}.{:03} rdmaq-intercept pid={} {:?}: {}\n",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id(),
        level,
        msg
    );
    let mut guard = FILE.lock();
    if guard.is_none() {
        *guard = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log_path)
            .ok();
    }
    if let Some(f) = guard.as_mut() {
        // Logging must never fail the verb it describes.
        let _ = f.write_all(line.as_bytes());
    }
}

macro_rules! log_at {
    ($cfg:expr, $level:ident, $($arg:tt)*) => {
        $crate::log::log($cfg, $crate::config::Level::$level, format_args!($($arg)*))
    };
}
pub(crate) use log_at;
