//! Certificate reload on SIGHUP or when a file changes: rotated certificates take effect
//! for new connections without a restart, so nothing admitted is dropped.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::signal::unix::{SignalKind, signal};

use super::Tls;

/// How often the files' modification times are checked.
const POLL: Duration = Duration::from_secs(2);

fn stamps(tls: &Tls) -> Vec<Option<SystemTime>> {
    tls.files()
        .paths()
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Watches for SIGHUP and for changed files, reloading `tls` on either; a failed reload is
/// logged and the previous material stays in use.
pub fn watch(tls: Arc<Tls>) {
    tokio::spawn(async move {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; certificates reload on file change only");
                None
            }
        };
        let mut seen = stamps(&tls);
        let mut tick = tokio::time::interval(POLL);
        loop {
            let why = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick() => {
                    let now = stamps(&tls);
                    if now == seen { continue; }
                    seen = now;
                    "file change"
                }
            };
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(trigger = why, identity = %tls.identity(), "TLS certificates reloaded")
                }
                Err(e) => {
                    tracing::error!(trigger = why, error = %e, "TLS reload failed; keeping the previous certificates")
                }
            }
        }
    });
}
