//! Wires the parts together: cameras (source) feed latest-frame hubs; one inference
//! worker per bundle, on its own thread, runs detection, tracking, the models and CLEF,
//! and turns tracks into events for an [`EventSink`]. Nothing here knows about MQTT or
//! systemd: the caller decides where events go.

pub mod analyze;
pub mod hub;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Loaded;
use crate::engine::Bundle;
use crate::engine::runtime::{self, SessionOptions};
use crate::events::EmotionEvent;
use crate::events::lifecycle::LifecycleConfig;
use crate::source::{Camera, CameraOptions, Ended, Frame, SourceSpec};
use analyze::Analyzer;
use hub::FrameHub;
pub use worker::{RunSummary, StageTotals};

/// Where events go. Returning `false` asks the pipeline to stop.
pub trait EventSink: Send + 'static {
    /// Takes one event; may block (that is the back-pressure on inference).
    fn emit(&mut self, event: EmotionEvent) -> bool;
}

impl EventSink for tokio::sync::mpsc::Sender<EmotionEvent> {
    fn emit(&mut self, event: EmotionEvent) -> bool {
        self.blocking_send(event).is_ok()
    }
}

impl EventSink for Arc<Mutex<Vec<EmotionEvent>>> {
    fn emit(&mut self, event: EmotionEvent) -> bool {
        self.lock().map(|mut v| v.push(event)).is_ok()
    }
}

/// Errors that stop the pipeline from starting at all.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Engine(#[from] runtime::EngineError),
    /// A bundle could not be loaded.
    #[error("bundle {path}: {source}")]
    Bundle {
        /// Bundle folder.
        path: String,
        /// Why.
        source: crate::engine::BundleError,
    },
    /// No camera could be started.
    #[error("no camera could start: {0}")]
    NoCamera(String),
}

/// The running pipeline.
pub struct Pipeline {
    cameras: Arc<Mutex<Vec<Camera>>>,
    workers: Vec<std::thread::JoinHandle<RunSummary>>,
    failures: Arc<Mutex<BTreeMap<String, String>>>,
}

/// Stops a pipeline from another thread (signal handling).
#[derive(Clone)]
pub struct Stopper {
    cameras: Arc<Mutex<Vec<Camera>>>,
}

impl Stopper {
    /// Stops every camera; workers then finish their frame, end tracks and return.
    pub fn stop(&self) {
        let cams: Vec<Camera> = self
            .cameras
            .lock()
            .map(|mut c| c.drain(..).collect())
            .unwrap_or_default();
        for cam in cams {
            cam.stop();
        }
    }
}

/// What the run ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per-worker summaries.
    pub summaries: Vec<RunSummary>,
    /// Cameras that ended with an error, and why.
    pub failures: BTreeMap<String, String>,
}

impl Pipeline {
    /// Loads ONNX Runtime and the bundles, starts every enabled camera, and starts one
    /// worker per bundle. A camera that fails to start is logged and skipped.
    pub fn start<S: EventSink + Clone>(
        loaded: &Loaded,
        sink: S,
    ) -> Result<Pipeline, PipelineError> {
        let cfg = &loaded.config;
        runtime::init(cfg.engine.onnxruntime.as_deref())?;
        let opts = SessionOptions {
            threads: cfg.engine.threads,
            providers: cfg.engine.providers.clone(),
            cache_dir: Some(
                cfg.engine
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| cfg.state_dir.join("engine-cache")),
            ),
        };
        let mut by_bundle: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (name, cam) in cfg.cameras.iter().filter(|(_, c)| c.enabled) {
            by_bundle
                .entry(
                    cam.bundle
                        .clone()
                        .unwrap_or_else(|| cfg.engine.bundle.clone()),
                )
                .or_default()
                .push(name.clone());
        }
        let lifecycle = LifecycleConfig {
            min_track_age: cfg.events.min_track_age,
            heartbeat: std::time::Duration::from_secs_f64(cfg.events.heartbeat_s),
            smoothing: cfg.events.smoothing,
            hysteresis: cfg.events.hysteresis,
        };
        let cameras = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(BTreeMap::new()));
        let mut workers = Vec::new();
        let mut start_errors = Vec::new();
        let track_ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for (dir, names) in by_bundle {
            let bundle = Bundle::load(&dir, &opts).map_err(|source| PipelineError::Bundle {
                path: dir.display().to_string(),
                source,
            })?;
            let analyzer = Analyzer::new(bundle);
            let hub: Arc<FrameHub<Frame>> = Arc::new(FrameHub::new(names.len()));
            let mut slots = Vec::new();
            for (slot, name) in names.iter().enumerate() {
                let cam = &cfg.cameras[name];
                // Validated by config::load; a parse failure here would be a bug, so report it like any start failure.
                let started = SourceSpec::parse(&cam.uri)
                    .map_err(|r| format!("camera '{name}': {r}"))
                    .and_then(|spec| {
                        let opts = CameraOptions {
                            name: name.clone(),
                            spec,
                            width: cam.width,
                            looping: cam.looping,
                            realtime: cam.realtime,
                        };
                        let (h1, h2, f, n) =
                            (hub.clone(), hub.clone(), failures.clone(), name.clone());
                        Camera::start(
                            opts,
                            move |frame| h1.put(slot, frame),
                            move |ended| {
                                if let Ended::Error(reason) = ended {
                                    if let Ok(mut f) = f.lock() {
                                        f.insert(n, reason);
                                    }
                                }
                                h2.close(slot);
                            },
                        )
                        .map_err(|e| e.to_string())
                    });
                match started {
                    Ok(camera) => cameras.lock().map(|mut c| c.push(camera)).unwrap_or(()),
                    Err(reason) => {
                        tracing::error!(camera = %name, error = %reason, "camera failed to start");
                        failures
                            .lock()
                            .map(|mut f| f.insert(name.clone(), reason.clone()))
                            .ok();
                        start_errors.push(reason);
                        hub.close(slot);
                    }
                }
                slots.push(name.clone());
            }
            workers.push(worker::spawn(
                analyzer,
                hub,
                slots,
                loaded,
                lifecycle.clone(),
                track_ids.clone(),
                sink.clone(),
            ));
        }
        if cameras.lock().map(|c| c.is_empty()).unwrap_or(true) {
            return Err(PipelineError::NoCamera(start_errors.join("; ")));
        }
        Ok(Pipeline {
            cameras,
            workers,
            failures,
        })
    }

    /// A handle that stops the pipeline.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            cameras: self.cameras.clone(),
        }
    }

    /// Waits until every camera has ended and every worker has finished.
    pub fn wait(self) -> Outcome {
        let summaries = self
            .workers
            .into_iter()
            .filter_map(|w| w.join().ok())
            .collect();
        Stopper {
            cameras: self.cameras,
        }
        .stop();
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        Outcome {
            summaries,
            failures,
        }
    }
}
