//! What the pipeline is asked to run, in its own terms: typed values only, nothing of
//! TOML and no file left to read (the caller has read passwords into the URIs). A reload
//! compares these with `!=`, so whatever is added here is covered by reload.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::TrackerSettings;
use crate::detect::filter::FaceFilter;
use crate::engine::runtime::SessionOptions;
use crate::events::lifecycle::LifecycleConfig;
use crate::source::SupervisorOptions;

use super::Batching;

/// Everything [`super::Pipeline::start`] and [`super::Control::reload`] need.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    /// How every inference worker is built; when it changes, every worker restarts.
    pub workers: WorkerOptions,
    /// The cameras to run, by name; one whose plan changes restarts alone.
    pub cameras: BTreeMap<String, CameraPlan>,
    /// Cameras configured but disabled, listed only while `mqtt.control` is on: a command
    /// can enable them at any time, so while one waits the run is never over, even when
    /// every running camera was a file that ended.
    pub disabled: Vec<String>,
}

/// The settings an inference worker is built with, apart from its bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerOptions {
    /// Device id, for the events.
    pub device_id: String,
    /// How models are loaded: threads, providers, TensorRT.
    pub session: SessionOptions,
    /// Inference lanes per bundle; 0 picks (see `SessionOptions::lanes_and_threads`).
    pub lanes: usize,
    /// Intra-op threads per model as configured; 0 picks.
    pub threads: usize,
    /// How frames of several cameras share a batch.
    pub batching: Batching,
    /// When tracks make events.
    pub lifecycle: LifecycleConfig,
    /// How faces are followed.
    pub tracker: TrackerSettings,
    /// Snapshots on: the longest side of a face's picture, in pixels.
    pub snapshot_px: Option<u32>,
}

/// One camera as the pipeline runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraPlan {
    /// The bundle folder whose worker analyses it.
    pub bundle: PathBuf,
    /// What to open and how to restart it.
    pub source: SupervisorOptions,
    /// The faces it cares about.
    pub filter: FaceFilter,
    /// How often its faces are detected and classified.
    pub cadence: Cadence,
    /// Snapshots of its faces (when the workers take them: `WorkerOptions::snapshot_px`).
    pub snapshots: bool,
}

/// How often a camera's frames pay for the detector and the classifiers (`detect_every`,
/// `classify_every`): every frame by default. In between, faces are taken to be where
/// they were last found (the tracker follows them), and a face that has not moved or
/// grown much keeps its last classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// The detector runs on every N-th frame.
    pub detect_every: u32,
    /// A face is classified again at least every N frames.
    pub classify_every: u32,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence { detect_every: 1, classify_every: 1 }
    }
}

impl Cadence {
    /// Whether every frame is detected and every face classified (nothing to remember).
    pub fn every_frame(&self) -> bool {
        self.detect_every <= 1 && self.classify_every <= 1
    }
}
