//! The live view's side of the frame path: while someone looks at a camera (its latest
//! picture or its MJPEG stream), its worker keeps a copy of the last analysed frame with
//! what it found, at most a few times a second. Nobody looking, nothing is copied.
//! Drawing and encoding happen on the viewer's side, never on the frame path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use crate::image::{Rect, RgbImage};

/// How long a look keeps a camera watched.
const WATCH_FOR: Duration = Duration::from_secs(3);
/// Fewest time between two copies of one camera's frames.
const EVERY: Duration = Duration::from_millis(100);

/// A camera's last analysed frame and its faces.
#[derive(Debug)]
pub struct Shot {
    /// The frame, as analysed.
    pub image: RgbImage,
    /// What was found on it.
    pub faces: Vec<ShotFace>,
    /// The camera's zones (faces count only inside them), normalised.
    pub zones: Vec<crate::config::Area>,
    /// The camera's ignored areas, normalised.
    pub ignore: Vec<crate::config::Area>,
    /// Counts the camera's shots, so a viewer knows a new one from one it has.
    pub number: u64,
}

/// One face on a [`Shot`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShotFace {
    /// Where, in frame pixels.
    pub rect: Rect,
    /// Its track, when it has one (filtered-out faces have none).
    pub track: Option<u64>,
    /// The decision (debiased when debias is on).
    pub label: String,
    /// The context-aware ensemble's label, bias included, when debias is on.
    pub factual: Option<String>,
}

#[derive(Debug, Default)]
struct View {
    watched_until: Option<Instant>,
    latest: Option<Arc<Shot>>,
    taken: Option<Instant>,
    numbered: u64,
}

/// Every camera's live view, shared by the workers and the viewers.
#[derive(Debug, Clone, Default)]
pub struct Views(Arc<Mutex<HashMap<String, View>>>, Breaker);

impl Views {
    /// No view yet; a poisoned lock breaks the pipeline through `broken`.
    pub(super) fn new(broken: Breaker) -> Views {
        Views(Arc::default(), broken)
    }

    /// Where a poisoned lock of the frame path is reported (shared with the probe).
    pub(super) fn breaker(&self) -> &Breaker {
        &self.1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, View>> {
        self.1.guard(&self.0, "the live views")
    }

    /// Someone looks at `camera`: keep its frames coming for a while; its latest shot.
    pub fn watch(&self, camera: &str) -> Option<Arc<Shot>> {
        let mut views = self.lock();
        let view = views.entry(camera.to_string()).or_default();
        view.watched_until = Some(Instant::now() + WATCH_FOR);
        view.latest.clone()
    }

    /// Whether a frame of `camera` should be kept now (someone looks, and the last copy
    /// is not too recent).
    pub(super) fn wanted(&self, camera: &str, now: Instant) -> bool {
        let views = self.lock();
        let Some(view) = views.get(camera) else { return false };
        view.watched_until.is_some_and(|until| now < until) && view.taken.is_none_or(|t| now >= t + EVERY)
    }

    /// Forgets a camera a reload removed.
    pub(super) fn forget(&self, camera: &str) {
        self.lock().remove(camera);
    }

    /// Keeps `camera`'s newest shot.
    pub(super) fn put(&self, camera: &str, mut shot: Shot) {
        let mut views = self.lock();
        let view = views.entry(camera.to_string()).or_default();
        view.numbered += 1;
        view.taken = Some(Instant::now());
        shot.number = view.numbered;
        view.latest = Some(Arc::new(shot));
    }
}
