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
use std::time::Duration;

use crate::config::Loaded;
use crate::engine::Bundle;
use crate::engine::runtime::{self, SessionOptions};
use crate::events::EmotionEvent;
use crate::events::lifecycle::LifecycleConfig;
use crate::source::{CameraOptions, CameraStatus, Frame, SourceSpec, Supervisor, SupervisorOptions};
use analyze::Analyzer;
use hub::FrameHub;
pub use worker::{Batching, CameraSummary, LatencyHistogram, RunSummary, StageTotals};

/// What the pipeline produces.
#[derive(Debug, Clone)]
pub enum Output {
    /// An emotion event (its `seq` is stamped by whoever publishes it).
    Event(Box<EmotionEvent>),
    /// A camera changed state (or reports its fps while streaming).
    CameraState(CameraStatus),
}

/// Where the pipeline's output goes. Returning `false` asks the pipeline to stop.
pub trait EventSink: Send + 'static {
    /// Takes one output; may block (that is the back-pressure on inference).
    fn emit(&mut self, output: Output) -> bool;
}

impl EventSink for tokio::sync::mpsc::Sender<Output> {
    fn emit(&mut self, output: Output) -> bool {
        self.blocking_send(output).is_ok()
    }
}

impl EventSink for Arc<Mutex<Vec<Output>>> {
    fn emit(&mut self, output: Output) -> bool {
        self.lock().map(|mut v| v.push(output)).is_ok()
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
    cameras: Arc<Mutex<Vec<Supervisor>>>,
    workers: Vec<std::thread::JoinHandle<RunSummary>>,
    failures: Arc<Mutex<BTreeMap<String, String>>>,
    probe: Probe,
}

/// Tells whether the frame path makes progress: every inference worker either analysed
/// frames since the last look or has nothing waiting. A worker stuck in inference with
/// frames piling up is not progressing (systemd's watchdog should then fire).
#[derive(Clone)]
pub struct Probe {
    workers: Vec<(Arc<FrameHub<Frame>>, Arc<std::sync::atomic::AtomicU64>)>,
    last: Vec<u64>,
    live: Vec<Arc<Mutex<RunSummary>>>,
}

impl Probe {
    /// Whether the frame path moved since the previous call.
    pub fn progressing(&mut self) -> bool {
        let mut ok = true;
        for (i, (hub, done)) in self.workers.iter().enumerate() {
            let now = done.load(std::sync::atomic::Ordering::Relaxed);
            let moved = self.last.get(i).is_none_or(|&l| now > l);
            ok &= moved || hub.waiting() == 0;
            if let Some(l) = self.last.get_mut(i) {
                *l = now;
            }
        }
        ok
    }

    /// A snapshot of every worker's statistics so far, with live drop counts.
    pub fn summaries(&self) -> Vec<RunSummary> {
        self.live
            .iter()
            .zip(&self.workers)
            .map(|(live, (hub, _))| {
                let mut s = live.lock().map(|s| s.clone()).unwrap_or_default();
                for (i, cam) in s.cameras.iter_mut().enumerate() {
                    cam.dropped = hub.stats(i).dropped;
                }
                s.dropped = s.cameras.iter().map(|c| c.dropped).sum();
                s
            })
            .collect()
    }

    /// Frames analysed so far, all workers together.
    pub fn frames(&self) -> u64 {
        self.workers.iter().map(|(_, d)| d.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }
}

/// Stops a pipeline from another thread (signal handling).
#[derive(Clone)]
pub struct Stopper {
    cameras: Arc<Mutex<Vec<Supervisor>>>,
}

impl Stopper {
    /// Stops every camera; workers then finish their frame, end tracks and return.
    pub fn stop(&self) {
        let cams: Vec<Supervisor> = self.cameras.lock().map(|mut c| c.drain(..).collect()).unwrap_or_default();
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
    /// Loads ONNX Runtime and the bundles, starts every enabled camera under its own
    /// supervisor, and starts one worker per bundle. A camera that fails is retried or
    /// reported without affecting the others.
    pub fn start<S: EventSink + Clone>(loaded: &Loaded, sink: S) -> Result<Pipeline, PipelineError> {
        let cfg = &loaded.config;
        runtime::init(cfg.engine.onnxruntime.as_deref())?;
        let opts = SessionOptions {
            threads: cfg.engine.threads,
            providers: cfg.engine.providers.clone(),
            cache_dir: Some(cfg.engine.cache_dir.clone().unwrap_or_else(|| cfg.state_dir.join("engine-cache"))),
        };
        let mut by_bundle: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (name, cam) in cfg.cameras.iter().filter(|(_, c)| c.enabled) {
            by_bundle
                .entry(cam.bundle.clone().unwrap_or_else(|| cfg.engine.bundle.clone()))
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
        let mut probe = Probe { workers: Vec::new(), last: Vec::new(), live: Vec::new() };
        let track_ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for (dir, names) in by_bundle {
            let bundle = Bundle::load(&dir, &opts)
                .map_err(|source| PipelineError::Bundle { path: dir.display().to_string(), source })?;
            let analyzer = Analyzer::new(bundle, cfg.engine.batch_max);
            let hub: Arc<FrameHub<Frame>> = Arc::new(FrameHub::new(names.len()));
            let mut slots = Vec::new();
            for (slot, name) in names.iter().enumerate() {
                let cam = &cfg.cameras[name];
                let spec = match SourceSpec::parse(&cam.uri) {
                    Ok(spec) => spec,
                    Err(reason) => {
                        // check-config rejects these; a file deleted since then lands here.
                        tracing::error!(camera = %name, error = %reason, "camera cannot start");
                        failures.lock().map(|mut f| f.insert(name.clone(), reason.clone())).ok();
                        start_errors.push(reason);
                        hub.close(slot);
                        slots.push(name.clone());
                        continue;
                    }
                };
                let opts = SupervisorOptions {
                    camera: CameraOptions {
                        name: name.clone(),
                        spec,
                        width: cam.width,
                        looping: cam.looping,
                        realtime: cam.realtime,
                        fps_cap: cam.fps,
                        rtsp_udp: cam.transport == "udp",
                        rtsp_latency_ms: cam.latency_ms,
                    },
                    backoff_initial: Duration::from_secs_f64(cfg.supervisor.backoff_initial_s),
                    backoff_max: Duration::from_secs_f64(cfg.supervisor.backoff_max_s),
                    stall_timeout: Duration::from_secs_f64(cfg.supervisor.stall_timeout_s),
                };
                let frames = hub.clone();
                let done = hub.clone();
                let status_sink = Mutex::new(sink.clone());
                let fails = failures.clone();
                let resets = hub.clone();
                let supervisor = Supervisor::spawn(
                    opts,
                    Arc::new(move |frame| frames.put(slot, frame)),
                    Arc::new(move |status: &CameraStatus| {
                        use crate::source::CameraState::{Failed, Reconnecting, Stalled};
                        if matches!(status.status, Reconnecting | Stalled | Failed) {
                            resets.reset(slot);
                        }
                        if status.status == Failed {
                            fails
                                .lock()
                                .map(|mut f| {
                                    f.insert(status.camera.clone(), status.last_error.clone().unwrap_or_default())
                                })
                                .ok();
                        }
                        if let Ok(mut s) = status_sink.lock() {
                            s.emit(Output::CameraState(status.clone()));
                        }
                    }),
                    Box::new(move || done.close(slot)),
                );
                cameras.lock().map(|mut c| c.push(supervisor)).ok();
                slots.push(name.clone());
            }
            let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            probe.workers.push((hub.clone(), done.clone()));
            probe.last.push(0);
            let setup = worker::WorkerSetup {
                done,
                hub,
                cameras: slots,
                lifecycle: lifecycle.clone(),
                track_ids: track_ids.clone(),
                batching: Batching {
                    max_frames: if cfg.engine.batching { cfg.engine.batch_max } else { 1 },
                    linger: Duration::from_secs_f64(cfg.engine.batch_timeout_ms / 1000.0),
                },
                sink: sink.clone(),
            };
            let handle = worker::spawn(analyzer, loaded, setup)
                .map_err(|e| PipelineError::NoCamera(format!("cannot start the inference thread: {e}")))?;
            let (handle, live) = handle;
            probe.live.push(live);
            workers.push(handle);
        }
        if cameras.lock().map(|c| c.is_empty()).unwrap_or(true) {
            return Err(PipelineError::NoCamera(start_errors.join("; ")));
        }
        Ok(Pipeline { cameras, workers, failures, probe })
    }

    /// A progress probe for the watchdog.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// A handle that stops the pipeline.
    pub fn stopper(&self) -> Stopper {
        Stopper { cameras: self.cameras.clone() }
    }

    /// Waits until every camera has ended and every worker has finished.
    pub fn wait(self) -> Outcome {
        let summaries = self.workers.into_iter().filter_map(|w| w.join().ok()).collect();
        Stopper { cameras: self.cameras }.stop();
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        Outcome { summaries, failures }
    }
}
