//! Telling systemd the truth: `READY=1` once a camera streams (or every camera has
//! failed), a one-line `STATUS=`, and `WATCHDOG=1` only while the frame path makes
//! progress, so a hung inference stage gets the service restarted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::notify::Notifier;
use crate::pipeline::{Output, Probe};
use crate::source::CameraState;

/// Forwards everything from the pipeline to the publisher, watching camera states on
/// the way to send `READY=1` and `STATUS=` lines.
pub async fn relay(
    mut from: mpsc::Receiver<Output>,
    to: mpsc::Sender<Output>,
    notifier: Arc<Notifier>,
    cameras: usize,
) {
    let mut states: BTreeMap<String, CameraState> = BTreeMap::new();
    let mut ready = false;
    let mut events = 0u64;
    while let Some(out) = from.recv().await {
        match &out {
            Output::CameraState(st) => {
                let changed = states.insert(st.camera.clone(), st.status) != Some(st.status);
                let streaming = states.values().filter(|s| **s == CameraState::Streaming).count();
                let failed = states.values().filter(|s| **s == CameraState::Failed).count();
                if !ready && (streaming > 0 || failed == cameras) {
                    ready = true;
                    notifier.send("READY=1");
                    tracing::info!(streaming, failed, "ready");
                }
                if changed {
                    notifier.send(&format!(
                        "STATUS={streaming}/{cameras} cameras streaming, {failed} failed, {events} events"
                    ));
                }
            }
            Output::Event(_) => events += 1,
        }
        if to.send(out).await.is_err() {
            break;
        }
    }
}

/// Pings the watchdog every `interval` while `probe` shows progress.
pub async fn watchdog(notifier: Arc<Notifier>, mut probe: Probe, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    let mut stuck_logged = false;
    loop {
        tick.tick().await;
        if probe.progressing() {
            notifier.send("WATCHDOG=1");
            stuck_logged = false;
        } else if !stuck_logged {
            stuck_logged = true;
            tracing::error!(frames = probe.frames(), "inference is not taking frames: withholding the watchdog ping");
        }
    }
}
