//! The HTTP side door: `/metrics` (Prometheus text format) and `/healthz` (200 with a
//! JSON summary when healthy, 503 with the reason otherwise). Deliberately tiny: GET
//! only, one request per connection, bounded request size and time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::mqtt::PublishStats;
use crate::pipeline::Probe;
use crate::source::{CameraState, CameraStatus};

/// What the endpoints report on; shared with the tasks that keep it current.
pub struct Health {
    /// Frame-path statistics.
    pub probe: Probe,
    /// Latest state of each camera.
    pub cameras: Arc<Mutex<BTreeMap<String, CameraStatus>>>,
    /// MQTT delivery counters.
    pub publish: Arc<PublishStats>,
    /// When the frame path last made progress.
    pub last_progress: Mutex<Instant>,
    /// Inference is considered hung after this long without progress.
    pub stuck_after: Duration,
    /// The broker counts as a problem after this long out of reach (events wait in the
    /// spool meanwhile, but nobody receives them).
    pub mqtt_down_after: Duration,
    /// Events produced, by camera, lifecycle step and emotion (for dashboards).
    pub events: Arc<Mutex<EventCounts>>,
}

/// Events by camera, lifecycle step and emotion.
pub type EventCounts = BTreeMap<(String, &'static str, String), u64>;

/// What the daemon saw go by on its way to the broker: each camera's latest state and the
/// events counted. The pipeline's sink writes it; health, stats and metrics read it.
#[derive(Clone, Default)]
pub struct Seen {
    /// Latest state of each camera.
    pub cameras: Arc<Mutex<BTreeMap<String, CameraStatus>>>,
    /// Events produced so far.
    pub events: Arc<Mutex<EventCounts>>,
}

impl Health {
    /// Fresh health state.
    pub fn new(probe: Probe, publish: Arc<PublishStats>, seen: &Seen) -> Health {
        Health {
            probe,
            cameras: seen.cameras.clone(),
            publish,
            last_progress: Mutex::new(Instant::now()),
            stuck_after: Duration::from_secs(10),
            mqtt_down_after: Duration::from_secs(60),
            events: seen.events.clone(),
        }
    }

    /// How long since the frame path last moved.
    pub fn since_progress(&self) -> Duration {
        self.last_progress.lock().map(|t| t.elapsed()).unwrap_or_default()
    }

    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        let stalled = self.since_progress();
        if stalled > self.stuck_after {
            return Some(format!("inference has not taken a frame for {:.0} s", stalled.as_secs_f64()));
        }
        if let Some(disk) = self.publish.problem() {
            return Some(format!("{disk} (events are being lost)"));
        }
        let down = self.publish.disconnected_for();
        if down > self.mqtt_down_after {
            return Some(format!(
                "the MQTT broker has been unreachable for {:.0} s (events wait in the spool)",
                down.as_secs_f64()
            ));
        }
        let cams = self.cameras.lock().ok()?;
        if !cams.is_empty() && !cams.values().any(|c| c.status == CameraState::Streaming) {
            return Some("no camera is streaming".into());
        }
        None
    }
}

/// Most connections served at once; more wait in the kernel's backlog, so a flood of idle
/// clients can never use up the process's file descriptors.
pub const MAX_CONNECTIONS: usize = 32;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused_logged = false;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => {
                refused_logged = false;
                stream
            }
            Err(e) => {
                // Out of descriptors (EMFILE) and the like: back off instead of spinning.
                if !refused_logged {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    refused_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, kind, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render_metrics(&health)),
                ("GET", "/healthz") => {
                    let (ok, body) = healthz(&health);
                    (if ok { "200 OK" } else { "503 Service Unavailable" }, "application/json", body)
                }
                ("GET", _) => ("404 Not Found", "text/plain", "try /metrics or /healthz\n".into()),
                _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn healthz(h: &Health) -> (bool, String) {
    let problem = h.problem();
    let cameras: BTreeMap<String, &str> =
        h.cameras.lock().map(|c| c.iter().map(|(k, v)| (k.clone(), v.status.as_str())).collect()).unwrap_or_default();
    let body = serde_json::json!({
        "status": if problem.is_none() { "ok" } else { "unhealthy" },
        "reason": problem,
        "cameras": cameras,
        "frames": h.probe.frames(),
        "mqtt_connected": h.publish.connected.load(Ordering::Relaxed),
        "spooled_events": h.publish.spooled.load(Ordering::Relaxed),
        "events_lost_to_disk_errors": h.publish.failed.load(Ordering::Relaxed),
        "disk_problem": h.publish.problem(),
    });
    (problem.is_none(), body.to_string() + "\n")
}

/// Latency bucket bounds in milliseconds.
const BOUNDS_MS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

fn histogram(out: &mut String, name: &str, labels: &str, h: &crate::pipeline::LatencyHistogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for b in BOUNDS_MS {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{}\"}} {}", b / 1000.0, h.count_le(b));
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
}

/// A label value as the exposition format wants it (backslash, quote and newline escaped);
/// camera names need none (check-config keeps them topic-safe), bundle labels might.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus exposition.
pub fn render_metrics(h: &Health) -> String {
    let mut o = String::new();
    let summaries = h.probe.summaries();
    let cams = h.cameras.lock().map(|c| c.clone()).unwrap_or_default();
    header(&mut o, "clefd_build_info", "gauge", "Always 1: the clefd and ONNX Runtime versions in use.");
    let _ = writeln!(
        o,
        "clefd_build_info{{version=\"{}\",onnxruntime=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        label_value(&crate::engine::runtime::version().unwrap_or_else(|| "unknown".into()))
    );
    header(&mut o, "clefd_camera_state", "gauge", "1 for the state each camera is in, 0 for the others.");
    for (name, st) in &cams {
        for state in [
            CameraState::Starting,
            CameraState::Streaming,
            CameraState::Reconnecting,
            CameraState::Stalled,
            CameraState::Failed,
            CameraState::Disabled,
        ] {
            let _ = writeln!(
                o,
                "clefd_camera_state{{camera=\"{name}\",state=\"{}\"}} {}",
                state.as_str(),
                u8::from(st.status == state)
            );
        }
    }
    header(&mut o, "clefd_camera_streaming", "gauge", "1 while the camera delivers frames.");
    for (name, st) in &cams {
        let _ = writeln!(
            o,
            "clefd_camera_streaming{{camera=\"{name}\"}} {}",
            u8::from(st.status == CameraState::Streaming)
        );
    }
    header(&mut o, "clefd_camera_fps", "gauge", "Frames per second the camera delivers.");
    for (name, st) in &cams {
        let _ = writeln!(o, "clefd_camera_fps{{camera=\"{name}\"}} {}", st.fps);
    }
    header(
        &mut o,
        "clefd_camera_restarts_total",
        "counter",
        "Times the camera was restarted after a failure or stall.",
    );
    for (name, st) in &cams {
        let _ = writeln!(o, "clefd_camera_restarts_total{{camera=\"{name}\"}} {}", st.restarts);
    }
    header(&mut o, "clefd_frames_analysed_total", "counter", "Frames that went through detection and classification.");
    for s in &summaries {
        for c in &s.cameras {
            let _ = writeln!(o, "clefd_frames_analysed_total{{camera=\"{}\"}} {}", c.name, c.frames);
        }
    }
    header(&mut o, "clefd_frames_dropped_total", "counter", "Frames dropped before inference, by reason.");
    for s in &summaries {
        for c in &s.cameras {
            let _ = writeln!(
                o,
                "clefd_frames_dropped_total{{camera=\"{}\",reason=\"latest_frame_wins\"}} {}",
                c.name, c.dropped
            );
        }
    }
    for (name, st) in &cams {
        let _ =
            writeln!(o, "clefd_frames_dropped_total{{camera=\"{name}\",reason=\"fps_cap\"}} {}", st.dropped_fps_cap);
    }
    header(&mut o, "clefd_faces_total", "counter", "Faces analysed.");
    for s in &summaries {
        for c in &s.cameras {
            let _ = writeln!(o, "clefd_faces_total{{camera=\"{}\"}} {}", c.name, c.faces);
        }
    }
    header(&mut o, "clefd_capture_to_decision_seconds", "histogram", "From frame capture to the decision on it.");
    for s in &summaries {
        for c in &s.cameras {
            histogram(&mut o, "clefd_capture_to_decision_seconds", &format!("camera=\"{}\"", c.name), &c.latency);
        }
    }
    header(&mut o, "clefd_inference_seconds", "histogram", "Model time per batch, by stage.");
    for s in &summaries {
        histogram(
            &mut o,
            "clefd_inference_seconds",
            &format!("bundle=\"{}\",stage=\"detect\"", s.bundle),
            &s.detect_batches,
        );
        histogram(
            &mut o,
            "clefd_inference_seconds",
            &format!("bundle=\"{}\",stage=\"classify\"", s.bundle),
            &s.classify_batches,
        );
    }
    header(&mut o, "clefd_inference_lanes", "gauge", "Inference lanes: batches a bundle can analyse at once.");
    for s in &summaries {
        let _ = writeln!(o, "clefd_inference_lanes{{bundle=\"{}\"}} {}", s.bundle, s.lanes);
    }
    header(&mut o, "clefd_inference_batches_in_flight", "gauge", "Batches being analysed right now.");
    for s in &summaries {
        let _ = writeln!(o, "clefd_inference_batches_in_flight{{bundle=\"{}\"}} {}", s.bundle, s.in_flight);
    }
    header(&mut o, "clefd_events_total", "counter", "Emotion events produced, by camera, lifecycle step and emotion.");
    for ((camera, kind, emotion), n) in h.events.lock().map(|e| e.clone()).unwrap_or_default() {
        let emotion = label_value(&emotion);
        let _ = writeln!(o, "clefd_events_total{{camera=\"{camera}\",type=\"{kind}\",emotion=\"{emotion}\"}} {n}");
    }
    let p = &h.publish;
    header(&mut o, "clefd_mqtt_events_acked_total", "counter", "Events the broker acknowledged.");
    let _ = writeln!(o, "clefd_mqtt_events_acked_total {}", p.acked.load(Ordering::Relaxed));
    header(&mut o, "clefd_mqtt_events_sent_total", "counter", "Events sent, re-sends included.");
    let _ = writeln!(o, "clefd_mqtt_events_sent_total {}", p.sent.load(Ordering::Relaxed));
    header(&mut o, "clefd_mqtt_events_dropped_total", "counter", "Events dropped because the spool was full.");
    let _ = writeln!(o, "clefd_mqtt_events_dropped_total {}", p.dropped.load(Ordering::Relaxed));
    header(
        &mut o,
        "clefd_events_lost_total",
        "counter",
        "Events lost because the disk refused them (full, read-only, too many open files).",
    );
    let _ = writeln!(o, "clefd_events_lost_total {}", p.failed.load(Ordering::Relaxed));
    header(&mut o, "clefd_spool_corrupt_records_total", "counter", "Spooled events skipped at start: bad checksum.");
    let _ = writeln!(o, "clefd_spool_corrupt_records_total {}", p.corrupt.load(Ordering::Relaxed));
    header(&mut o, "clefd_spool_writable", "gauge", "0 while the spool or the sequence file cannot be written.");
    let _ = writeln!(o, "clefd_spool_writable {}", u8::from(p.problem().is_none()));
    header(&mut o, "clefd_spool_events", "gauge", "Events waiting in the spool for the broker.");
    let _ = writeln!(o, "clefd_spool_events {}", p.spooled.load(Ordering::Relaxed));
    header(&mut o, "clefd_mqtt_connected", "gauge", "1 while connected to the broker.");
    let _ = writeln!(o, "clefd_mqtt_connected {}", u8::from(p.connected.load(Ordering::Relaxed)));
    header(&mut o, "clefd_mqtt_connects_total", "counter", "Successful connections to the broker.");
    let _ = writeln!(o, "clefd_mqtt_connects_total {}", p.connects.load(Ordering::Relaxed));
    o
}
