//! What the HTTP side door reports on: [`Health`], shared with the tasks that keep it
//! current, and `/healthz`'s verdict (200 with a JSON summary when healthy, 503 with the
//! reason otherwise). The server itself is `service::server`.

use std::collections::BTreeMap;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::mqtt::PublishStats;
use crate::pipeline::Probe;
use crate::source::CameraStatus;

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
    /// Events produced, by camera, lifecycle step and emotion (for dashboards).
    pub events: Arc<Mutex<EventCounts>>,
    /// The live view's encoded frames and viewer seats.
    pub live: super::live::Encoded,
    /// Where snapshots go, when they are on: `/metrics` shows what was dropped or failed.
    pub snapshots: Option<Arc<super::snapshots::SnapshotPlaces>>,
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
            events: seen.events.clone(),
            live: super::live::Encoded::new(),
            snapshots: None,
        }
    }

    /// Reports on `places` too (when snapshots are on).
    pub fn with_snapshots(self, places: Option<Arc<super::snapshots::SnapshotPlaces>>) -> Health {
        Health { snapshots: places, ..self }
    }

    /// How long since the frame path last moved.
    pub fn since_progress(&self) -> Duration {
        self.probe.guard(&self.last_progress, "the time of the last progress").elapsed()
    }

    /// A copy of every camera's latest state (a poisoned lock breaks the pipeline: see
    /// [`Probe::guard`]).
    pub fn states(&self) -> BTreeMap<String, CameraStatus> {
        self.probe.guard(&self.cameras, "the cameras' states").clone()
    }

    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        if let Some(broken) = self.probe.broken() {
            return Some(broken);
        }
        let stalled = self.since_progress();
        if stalled > self.stuck_after {
            // Half the time: a worker is seen stalled a look after the last progress of
            // all; one that took no frame for that long has stopped as well.
            let cameras = self.probe.stopped_cameras(self.stuck_after / 2);
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
        if let Some(delivery) = self.publish.delivery_problem() {
            return Some(delivery);
        }
        super::probe::cameras_problem(&self.states(), &self.probe.analysed_fps())
    }
}

/// `/healthz`'s verdict and JSON body: healthy or not, and why.
pub(super) fn healthz(h: &Health) -> (bool, String) {
    let problem = h.problem();
    let states = h.states();
    let cameras: BTreeMap<String, &str> = states.iter().map(|(k, v)| (k.clone(), v.status.as_str())).collect();
    let body = serde_json::json!({
        "status": if problem.is_none() { "ok" } else { "unhealthy" },
        "reason": problem,
        "cameras": cameras,
        "frames": h.probe.frames(),
        "mqtt_connected": h.publish.connected.load(Ordering::Relaxed),
        "spooled_events": h.publish.spooled.load(Ordering::Relaxed),
        "events_lost_to_disk_errors": h.publish.failed.load(Ordering::Relaxed),
        "disk_problem": h.publish.problem(),
        "engine_acceptance": crate::engine::acceptance::summary(),
    });
    (problem.is_none(), body.to_string() + "\n")
}
