//! The periodic `{prefix}/{device}/stats` message: per-camera fps, drops and latency,
//! inference time per stage, and the state of delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::http::Health;
use crate::mqtt::Outgoing;

/// The statistics as JSON.
pub fn stats_json(h: &Health, uptime: Duration) -> Value {
    let states = h.states();
    let mut cameras = BTreeMap::new();
    let mut inference = BTreeMap::new();
    for s in h.probe.summaries() {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / s.batches.max(1) as f64;
        inference.insert(
            s.bundle.clone(),
            json!({"frames": s.frames, "batches": s.batches, "detect_ms_per_batch": per(s.stages.detect), "classify_ms_per_batch": per(s.stages.classify)}),
        );
        for c in &s.cameras {
            let st = states.get(&c.name);
            cameras.insert(
                c.name.clone(),
                json!({
                    "status": st.map(|s| s.status.as_str()),
                    "fps": st.map(|s| s.fps),
                    "restarts": st.map(|s| s.restarts),
                    "decoder": st.and_then(|s| s.decoder.clone()),
                    "frames": c.frames,
                    "faces": c.faces,
                    "dropped": {"latest_frame_wins": c.dropped, "fps_cap": st.map(|s| s.dropped_fps_cap)},
                    "latency_ms": {"p50": c.latency.quantile_ms(0.5), "p99": c.latency.quantile_ms(0.99)},
                }),
            );
        }
    }
    let p = &h.publish;
    json!({
        "ts": crate::events::rfc3339(std::time::SystemTime::now()),
        "uptime_s": uptime.as_secs(),
        "cameras": cameras,
        "inference": inference,
        "mqtt": {
            "connected": p.connected.load(Ordering::Relaxed),
            "connects": p.connects.load(Ordering::Relaxed),
            "acked": p.acked.load(Ordering::Relaxed),
            "sent": p.sent.load(Ordering::Relaxed),
            "dropped": p.dropped.load(Ordering::Relaxed),
            "spooled": p.spooled.load(Ordering::Relaxed),
            "lost_to_disk_errors": p.failed.load(Ordering::Relaxed),
            "disk_problem": p.problem(),
        },
    })
}

/// Sends the statistics every `every`.
pub async fn publish_stats(to: mpsc::Sender<Outgoing>, health: Arc<Health>, every: Duration) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let body = stats_json(&health, started.elapsed()).to_string().into_bytes();
        if to.send(Outgoing::Stats(body)).await.is_err() {
            return;
        }
    }
}
