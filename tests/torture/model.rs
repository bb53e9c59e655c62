//! What the daemon *should* be doing: the cameras its config names, what runtime control
//! set on them, whether their sources are reachable, the broker, the live viewers. Pure:
//! the steps change it, the invariants compare the real daemon with it.

use std::collections::BTreeMap;

/// The demo bundles: two, so that a camera alone on its bundle is exercised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bundle {
    /// `engines/face-fer2013` (the config's default bundle).
    Face,
    /// `engines/context-bias-demo`.
    Context,
}

/// Where a camera's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `test://PATTERN`: never ends.
    Pattern(&'static str),
    /// A file played in a loop (the astronaut: it makes events).
    Looping,
    /// A file played once: it ends.
    Ending,
    /// A file damaged mid-way, played once: it ends or fails.
    Damaged,
    /// The harness's RTSP server, which a step takes down and brings back.
    Rtsp,
}

/// The names a camera may have and what each one is.
pub const POOL: [(&str, Kind); 7] = [
    ("ball", Kind::Pattern("ball")),
    ("smpte", Kind::Pattern("smpte")),
    ("snow", Kind::Pattern("snow")),
    ("hall", Kind::Looping),
    ("clip", Kind::Ending),
    ("torn", Kind::Damaged),
    ("door", Kind::Rtsp),
];

/// The cameras at start (and after a reset): one alone on the context bundle.
pub const INITIAL: [(&str, Bundle); 3] = [("ball", Bundle::Face), ("smpte", Bundle::Context), ("hall", Bundle::Face)];

/// One camera as the config file names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    pub kind: Kind,
    pub bundle: Bundle,
    /// The file's `fps` cap.
    pub fps: f64,
}

/// What runtime control set on a camera (what matters to the model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `enabled` as set over MQTT (`None`: the file's, always on here).
    pub enabled: Option<bool>,
    /// Another setting was set (fps, thresholds...): nothing the states show, but events
    /// may stop (a score threshold no face passes).
    pub tuned: bool,
    /// A flood set its fps (4 to 5: its faces still make events). Read by `Reset` through
    /// the comparison with the default: a flooded camera is one the reset's clear must reach.
    pub flooded: bool,
}

/// What a camera should be doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Analysing frames: `streaming` everywhere, frames counted.
    Running,
    /// Turned off over MQTT: `disabled` everywhere.
    Disabled,
    /// A file that ended: `ended` (or `failed`, damaged) everywhere, never `streaming`.
    Over,
    /// Its source is down: reconnecting (or starting, stalled) everywhere.
    Unreachable,
}

/// The whole world as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub cameras: BTreeMap<&'static str, Camera>,
    pub overrides: BTreeMap<&'static str, Overrides>,
    /// The RTSP server is up.
    pub source_up: bool,
    /// Live viewers held open, by camera.
    pub viewers: Vec<&'static str>,
}

impl Model {
    /// The world at start.
    pub fn initial() -> Model {
        let cameras =
            INITIAL.iter().map(|&(name, bundle)| (name, Camera { kind: kind(name), bundle, fps: 5.0 })).collect();
        Model { cameras, overrides: BTreeMap::new(), source_up: true, viewers: Vec::new() }
    }

    /// Whether runtime control leaves the camera on.
    pub fn enabled(&self, name: &str) -> bool {
        self.overrides.get(name).and_then(|o| o.enabled) != Some(false)
    }

    /// Cameras present and on (what the daemon's "keep one enabled" rule counts).
    pub fn enabled_count(&self) -> usize {
        self.cameras.keys().filter(|n| self.enabled(n)).count()
    }

    /// What `name` should be doing.
    pub fn expect(&self, name: &str) -> Option<Expect> {
        let cam = self.cameras.get(name)?;
        Some(if !self.enabled(name) {
            Expect::Disabled
        } else {
            match cam.kind {
                Kind::Ending | Kind::Damaged => Expect::Over,
                Kind::Rtsp if !self.source_up => Expect::Unreachable,
                _ => Expect::Running,
            }
        })
    }

    /// Seats the live view should have taken: viewers on cameras still configured.
    pub fn seats_held(&self) -> usize {
        self.viewers.iter().filter(|c| self.cameras.contains_key(*c)).count()
    }

    /// Cameras that should be analysing frames.
    pub fn running(&self) -> Vec<&'static str> {
        self.cameras.keys().copied().filter(|n| self.expect(n) == Some(Expect::Running)).collect()
    }
}

/// The kind of a pool name.
pub fn kind(name: &str) -> Kind {
    POOL.iter().find(|(n, _)| *n == name).map_or(Kind::Pattern("ball"), |(_, k)| *k)
}
