//! Telling systemd the truth: a one-line `STATUS=` that follows the cameras (`READY=1`
//! is the daemon's, sent once it serves, whatever its cameras do), and `WATCHDOG=1` only
//! while the frame path makes progress, so a hung inference stage gets the service
//! restarted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::http::Health;
use super::notify::Notifier;
use crate::events::current::CurrentView;
use crate::mqtt::Outgoing;
use crate::pipeline::Output;
use crate::source::CameraState;

/// Forwards everything from the pipeline to the publisher, recording camera states for
/// the health endpoints, keeping each camera's `current` summary, and sending `STATUS=`
/// lines on the way.
pub async fn relay(
    mut from: mpsc::Receiver<Output>,
    to: mpsc::Sender<Outgoing>,
    notifier: Arc<Notifier>,
    health: Arc<Health>,
    cameras: usize,
    mut current: CurrentView,
) {
    let mut events = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let out = tokio::select! {
            out = from.recv() => match out {
                Some(out) => out,
                None => break,
            },
            _ = tick.tick() => {
                for (camera, summary) in current.on_tick(Instant::now()) {
                    let payload = serde_json::to_vec(&summary).unwrap_or_default();
                    if to.send(Outgoing::Current { camera, payload }).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        if let Output::Event(e) = &out {
            if let Ok(mut counts) = health.events.lock() {
                *counts.entry((e.camera.clone(), e.kind.as_str(), e.emotion.clone())).or_default() += 1;
            }
            if let Some(summary) = current.on_event(e, Instant::now()) {
                let payload = serde_json::to_vec(&summary).unwrap_or_default();
                if to.send(Outgoing::Current { camera: e.camera.clone(), payload }).await.is_err() {
                    return;
                }
            }
        }
        match &out {
            Output::CameraState(st) => {
                let (changed, streaming, failed) = match health.cameras.lock() {
                    Ok(mut states) => {
                        let changed =
                            states.insert(st.camera.clone(), st.clone()).is_none_or(|old| old.status != st.status);
                        let count = |s: CameraState| states.values().filter(|c| c.status == s).count();
                        (changed, count(CameraState::Streaming), count(CameraState::Failed))
                    }
                    Err(_) => continue,
                };
                if changed {
                    notifier.send(&format!(
                        "STATUS={streaming}/{cameras} cameras streaming, {failed} failed, {events} events"
                    ));
                }
            }
            Output::Event(_) => events += 1,
            Output::CameraRemoved(camera) => {
                if let Ok(mut states) = health.cameras.lock() {
                    states.remove(camera);
                }
                if let Ok(mut counts) = health.events.lock() {
                    counts.retain(|(c, _, _), _| c != camera);
                }
                current.remove(camera);
            }
        }
        let out = match out {
            Output::Event(e) => Outgoing::Event(e),
            Output::CameraState(s) => Outgoing::CameraState(s),
            Output::CameraRemoved(c) => Outgoing::CameraRemoved(c),
        };
        if to.send(out).await.is_err() {
            break;
        }
    }
}

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
            if let Ok(mut t) = health.last_progress.lock() {
                *t = Instant::now();
            }
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
