//! Telling systemd the truth: a one-line `STATUS=` that follows the cameras (`READY=1`
//! is the daemon's, sent once it serves, whatever its cameras do), and `WATCHDOG=1` only
//! while the frame path makes progress, so a hung inference stage gets the service
//! restarted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::Health;
use super::notify::Notifier;

/// Watches the frame path (at least twice a second); pings systemd's watchdog (when it asked for
/// pings) only while frames keep moving.
pub async fn monitor(notifier: Arc<Notifier>, health: Arc<Health>, watchdog: Option<Duration>) {
    let mut probe = health.probe.clone();
    let period = watchdog.map_or(Duration::from_millis(500), |w| (w / 2).min(Duration::from_millis(500)));
    let mut tick = tokio::time::interval(period);
    let mut last_ping = Instant::now();
    let mut stuck_logged = false;
    loop {
        tick.tick().await;
        if probe.progressing() {
            *probe.guard(&health.last_progress, "the time of the last progress") = Instant::now();
            stuck_logged = false;
        } else if !stuck_logged {
            stuck_logged = true;
            tracing::error!(frames = probe.frames(), "inference is not taking frames");
        }
        if let Some(interval) = watchdog {
            if last_ping.elapsed() >= interval && health.since_progress() < interval {
                notifier.send("WATCHDOG=1");
                last_ping = Instant::now();
            }
        }
    }
}
