//! The HTTP side door: `/metrics` (Prometheus text format) and `/healthz` (200 with a
//! JSON summary when healthy, 503 with the reason otherwise). Deliberately tiny: GET
//! only, one request per connection, bounded request size and time.

use std::collections::BTreeMap;

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
    /// The live view's encoded frames and viewer seats.
    pub live: super::live::Encoded,
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
            live: super::live::Encoded::new(),
        }
    }

    /// How long since the frame path last moved.
    pub fn since_progress(&self) -> Duration {
        self.last_progress.lock().map(|t| t.elapsed()).unwrap_or_default()
    }

    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        if let Some(broken) = self.probe.broken() {
            return Some(broken);
        }
        let stalled = self.since_progress();
        if stalled > self.stuck_after {
            let cameras = self.probe.waiting_cameras();
            let whose = if cameras.is_empty() {
                "inference".to_string()
            } else {
                format!("analysis of {}", cameras.join(", "))
            };
            return Some(format!("{whose} has not taken a frame for {:.0} s", stalled.as_secs_f64()));
        }
        if let Some(disk) = self.publish.problem() {
            return Some(format!("{disk} (events are being lost)"));
        }
        if let Some(delivery) = self.publish.delivery_problem(self.mqtt_down_after) {
            return Some(delivery);
        }
        let cams = self.cameras.lock().ok()?;
        // A camera disabled on purpose is no fault: with every camera disabled, all is well.
        let active: Vec<&CameraStatus> = cams.values().filter(|c| c.status != CameraState::Disabled).collect();
        if !active.is_empty() && !active.iter().any(|c| c.status == CameraState::Streaming) {
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
            let request = String::from_utf8_lossy(&buf[..len]).into_owned();
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if let (true, Some((camera, view))) = (method == "GET", super::live::route(path)) {
                let camera = camera.to_string();
                if view == "live.mjpeg" && super::live::known(&health, &camera) {
                    return super::live::stream(health, camera, stream).await;
                }
                let (status, kind, body) = match super::live::known(&health, &camera) {
                    false => ("404 Not Found", "text/plain", format!("no camera '{camera}': see /\n").into_bytes()),
                    true => match super::live::latest(&health, &camera).await {
                        Some(jpeg) => ("200 OK", "image/jpeg", jpeg.to_vec()),
                        None => (
                            "503 Service Unavailable",
                            "text/plain",
                            b"no frame analysed yet: is the camera streaming?\n".to_vec(),
                        ),
                    },
                };
                return respond(&mut stream, status, kind, &body).await;
            }
            let (status, kind, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", super::metrics::CONTENT_TYPE, super::metrics::render(&health)),
                ("GET", "/healthz") => {
                    let (ok, body) = healthz(&health);
                    (if ok { "200 OK" } else { "503 Service Unavailable" }, "application/json", body)
                }
                ("GET", "/") => ("200 OK", "text/html; charset=utf-8", super::live::index(&health)),
                ("GET", _) => {
                    ("404 Not Found", "text/plain", "try /, /metrics, /healthz or /cameras/NAME/latest.jpg\n".into())
                }
                _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
            };
            respond(&mut stream, status, kind, body.as_bytes()).await;
        });
    }
}

/// The status line and headers of a whole response.
pub(super) fn head(status: &str, kind: &str, len: usize) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, kind: &str, body: &[u8]) {
    let _ = stream.write_all(head(status, kind, body.len()).as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
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
