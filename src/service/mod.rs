//! The daemon's edges to the operating system: logging set-up, signals and systemd.

pub mod forward;
pub mod http;
pub mod metrics;
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

/// The signals the daemon answers, registered as the very first thing it does so that a
/// SIGTERM or SIGHUP during start-up (while models load) is acted on, not fatal.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP; must run inside a tokio runtime.
    pub fn register() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next signal (also one that arrived before this call).
    pub async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => {
                tracing::info!("SIGTERM: shutting down");
                Signal::Stop
            }
            () = recv(&mut self.int) => {
                tracing::info!("SIGINT: shutting down");
                Signal::Stop
            }
            () = recv(&mut self.hup) => Signal::Reload,
        }
    }
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}
