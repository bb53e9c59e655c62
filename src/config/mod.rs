//! The daemon's configuration: what a user writes, how it is layered, and how it is
//! checked and typed before anything starts.
//!
//! Layers, later ones winning: the main TOML file (`/etc/clefd/clefd.toml`), one file per
//! camera in `cameras.d/*.toml` beside it, then environment variables
//! `CLEFD__SECTION__KEY` (e.g. `CLEFD__MQTT__URL`). Loading never stops at the first
//! mistake: every problem is collected as a [`Problem`] naming the file, the key and the
//! reason, so `clefd check-config` can list them all at once. Only a configuration without
//! problems becomes [`Settings`], whose values are typed.
//!
//! A leaf: it depends on no other part of clefd. Checks that need a bundle's models or a
//! broker are made by the commands that load them.

use std::fmt;
use std::path::Path;

pub mod file;
mod load;
mod settings;
pub mod uri;
mod validate;
mod values;

pub use load::sources_fingerprint;
pub use settings::{
    CameraSettings, ControlSettings, EngineSettings, EventSettings, HistorySettings, HttpAuth, HttpSettings,
    MqttConnection, MqttSettings, Settings, SupervisorSettings, TlsPaths, TrackerSettings,
};
pub use uri::SourceSpec;
pub use values::{Area, BrokerUrl, DecoderChoice, Precision, Protocol, Provider, Require, Transport};

/// Environment variables with this prefix (then `__`) override config keys.
pub const ENV_PREFIX: &str = "CLEFD";

/// Most cameras one daemon runs (each has its own GStreamer pipeline and threads).
pub const MAX_CAMERAS: usize = 128;

/// Where `[history]` keeps events, in `state_dir`.
pub const HISTORY_FILE: &str = "history.sqlite";

/// Where `mqtt.control_persist` keeps what was set over MQTT, in `state_dir`.
pub const CONTROL_FILE: &str = "control.json";

/// The ranges of the camera settings that can also be set at run time (over MQTT), so
/// a command is checked exactly as the file is.
pub mod limits {
    /// `fps`: frames analysed per second at most.
    pub const FPS: (f64, f64) = (0.1, 240.0);
    /// `score_threshold`: the detector score below which faces are ignored.
    pub const SCORE: (f32, f32) = (0.0, 1.0);
    /// `min_face_px`: the shorter side below which faces are ignored, in pixels.
    pub const FACE_PX: (f32, f32) = (0.0, 4096.0);
    /// `detect_every`: the detector runs on every N-th frame.
    pub const DETECT_EVERY: (u32, u32) = (1, 30);
    /// `classify_every`: a face is classified again at least every N frames.
    pub const CLASSIFY_EVERY: (u32, u32) = (1, 300);
}

/// A camera's working width unless it sets one.
pub const DEFAULT_WIDTH: u32 = 640;

/// The execution providers tried when the config names none: the fastest first.
pub fn default_providers() -> Vec<Provider> {
    vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
}

/// Loads, layers, checks and types the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    load_with(path, &|_| None)
}

/// [`load`], with every bundle folder the configuration names also checked by
/// `check_bundle` (its manifest, say): the caller's parser, so this module depends on
/// nothing, and its problems are listed with all the others.
pub fn load_with(path: &Path, check_bundle: &dyn Fn(&Path) -> Option<Problem>) -> Result<Settings, ConfigErrors> {
    let mut c = Collector { problems: Vec::new(), check_bundle, bundles_seen: Vec::new() };
    let settings = load::layered(path, &mut c).and_then(|(raw, files)| validate::validate(raw, files, path, &mut c));
    match settings {
        Some(s) if c.problems.is_empty() => Ok(s),
        _ => Err(ConfigErrors(c.problems)),
    }
}

/// One thing wrong with the configuration, precise enough to fix without guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or `environment`) the offending value came from.
    pub file: String,
    /// The dotted key, or `-` when the whole file is at fault.
    pub key: String,
    /// What is wrong and, where possible, what to do.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.reason)
    }
}

/// All problems found while loading; never empty.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Problem>);

struct Collector<'a> {
    problems: Vec<Problem>,
    /// The caller's check of a bundle folder that exists.
    check_bundle: &'a dyn Fn(&Path) -> Option<Problem>,
    /// Bundle folders checked already (several cameras may share one).
    bundles_seen: Vec<std::path::PathBuf>,
}

impl Collector<'_> {
    /// Records a problem; a key whose value came from a `CLEFD__…` variable is blamed on
    /// the environment, not on the file.
    fn push(&mut self, file: impl fmt::Display, key: impl Into<String>, reason: impl Into<String>) {
        let key = key.into();
        let file = load::origin_of(&key, &file.to_string());
        self.problems.push(Problem { file, key, reason: reason.into() });
    }
}

#[cfg(test)]
mod tests;
