//! The daemon's edges to the operating system: logging set-up, signals and systemd.

pub mod http;
pub mod notify;
pub mod stats;
pub mod systemd;

use tracing_subscriber::EnvFilter;

/// Logs to the journal with structured fields (camera, track, seq, ...) when systemd
/// connected our stderr to it (`JOURNAL_STREAM`), else human-readable lines to stderr.
/// `RUST_LOG` wins over `level`.
pub fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},ort=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                // Fields keep their names (CAMERA, TRACK, SEQ, ...): `journalctl CAMERA=door`.
                .with(journald.with_syslog_identifier("clefd".into()).with_field_prefix(None))
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = i.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
