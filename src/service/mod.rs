//! The daemon's edges to the operating system: logging set-up, signals and systemd.

pub mod auth;
mod blur;
mod font;
pub mod forward;
pub mod heap;
mod history_chart;
mod history_page;
pub mod http;
mod index;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod server;
mod slots;
pub mod snapshots;
mod stall;
pub mod stats;
pub mod systemd;
mod unsent;

use tracing_subscriber::EnvFilter;

/// Changes the running log filter (`log_level` on reload), unless `RUST_LOG` chose it.
pub struct LogLevel {
    handle: Option<tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
}

impl LogLevel {
    /// Applies `level` (`info`, `clefd=debug,warn`, ...): whether it changed anything.
    pub fn set(&self, level: &str) -> bool {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing::warn!("RUST_LOG is set: it decides what is logged, log_level is not applied");
            return false;
        }
        let (Some(handle), Ok(filter)) = (&self.handle, EnvFilter::try_new(format!("{level},ort=warn"))) else {
            return false;
        };
        handle.reload(filter).is_ok()
    }
}

/// Logs to the journal with structured fields (camera, track, seq, ...) when systemd
/// connected our stderr to it (`JOURNAL_STREAM`), else human-readable lines to stderr.
/// `RUST_LOG` wins over `level`. The handle changes the level later.
pub fn init_logging(level: &str) -> LogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},ort=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let installed = match journald {
        // Fields keep their names (CAMERA, TRACK, SEQ, ...): `journalctl CAMERA=door`.
        Some(journald) => {
            registry.with(journald.with_syslog_identifier("clefd".into()).with_field_prefix(None)).try_init()
        }
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init(),
    };
    LogLevel { handle: installed.is_ok().then_some(handle) }
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
