//! Wires the parts together: cameras (source) feed latest-frame hubs; one inference
//! worker per bundle, on its own thread, runs detection, tracking, the models and CLEF,
//! and turns tracks into events for an [`EventSink`]. Nothing here knows about MQTT or
//! systemd: the caller decides where events go.

pub mod analyze;
pub mod hub;
pub mod lanes;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{CameraConfig, Loaded};
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
    /// A reload removed this camera; nothing more comes from it.
    CameraRemoved(String),
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

impl EventSink for Box<dyn EventSink> {
    fn emit(&mut self, output: Output) -> bool {
        (**self).emit(output)
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

/// One inference worker: a bundle, its hub and its thread.
struct Worker {
    hub: Arc<FrameHub<Frame>>,
    cameras: Arc<Mutex<Vec<worker::SlotCamera>>>,
    handle: Option<std::thread::JoinHandle<RunSummary>>,
}

/// One running camera.
struct Running {
    name: String,
    bundle: PathBuf,
    hub: Arc<FrameHub<Frame>>,
    slot: usize,
    config: CameraConfig,
    supervisor: Supervisor,
}

/// The sink of a finished pipeline.
struct Discard;

impl EventSink for Discard {
    fn emit(&mut self, _: Output) -> bool {
        false
    }
}

type SinkFactory = Arc<dyn Fn() -> Box<dyn EventSink> + Send + Sync>;

struct Inner {
    loaded: Loaded,
    opts: SessionOptions,
    lifecycle: LifecycleConfig,
    track_ids: Arc<std::sync::atomic::AtomicU64>,
    sink: SinkFactory,
    workers: BTreeMap<PathBuf, Worker>,
    /// Workers replaced by a reload that changed their settings; they finish once their
    /// cameras are gone and are joined by [`Pipeline::wait`].
    retired: Vec<Worker>,
    cameras: BTreeMap<String, Running>,
    failures: Arc<Mutex<BTreeMap<String, String>>>,
    probe: Probe,
    stopped: bool,
}

/// The running pipeline. Cameras can be added, changed and removed while it runs
/// ([`Control::reload`]); the cameras a reload does not touch keep streaming.
pub struct Pipeline {
    inner: Arc<Mutex<Inner>>,
}

/// Stops or reconfigures a running pipeline from another thread (signal handling).
#[derive(Clone)]
pub struct Control {
    inner: Arc<Mutex<Inner>>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Cameras started because they are new.
    pub added: Vec<String>,
    /// Cameras restarted because their section changed.
    pub changed: Vec<String>,
    /// Cameras stopped because they left the config.
    pub removed: Vec<String>,
    /// Cameras left running untouched.
    pub unchanged: Vec<String>,
    /// Engine, events or tracker settings changed: every camera moved to new workers.
    pub workers_restarted: bool,
}

/// Tells whether the frame path makes progress: every inference worker either analysed
/// frames since the last look or has nothing waiting. A worker stuck in inference with
/// frames piling up is not progressing (systemd's watchdog should then fire).
#[derive(Clone)]
pub struct Probe {
    workers: Arc<Mutex<Vec<ProbeEntry>>>,
    /// Where each configured camera's frames go now: its worker's hub and slot. Slots of
    /// cameras a reload removed or restarted are left out of the summaries, so a camera's
    /// series appears once and a removed camera's not at all.
    current: Arc<Mutex<BTreeMap<String, (usize, usize)>>>,
    last: Vec<u64>,
}

/// A hub's identity, for [`Probe`]'s map of current slots.
fn hub_id(hub: &Arc<FrameHub<Frame>>) -> usize {
    Arc::as_ptr(hub) as usize
}

#[derive(Clone)]
struct ProbeEntry {
    hub: Arc<FrameHub<Frame>>,
    done: Arc<std::sync::atomic::AtomicU64>,
    live: Arc<Mutex<RunSummary>>,
}

impl Probe {
    fn entries(&self) -> Vec<ProbeEntry> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Whether the frame path moved since the previous call.
    pub fn progressing(&mut self) -> bool {
        let entries = self.entries();
        self.last.resize(entries.len(), 0);
        let mut ok = true;
        for (e, last) in entries.iter().zip(self.last.iter_mut()) {
            let now = e.done.load(std::sync::atomic::Ordering::Relaxed);
            ok &= now > *last || e.hub.waiting() == 0;
            *last = now;
        }
        ok
    }

    /// A snapshot of every worker's statistics so far, with live drop counts: one entry
    /// per camera in the configuration now (its current slot).
    pub fn summaries(&self) -> Vec<RunSummary> {
        let current = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        self.entries()
            .iter()
            .map(|e| {
                let mut s = e.live.lock().map(|s| s.clone()).unwrap_or_default();
                for (i, cam) in s.cameras.iter_mut().enumerate() {
                    cam.dropped = e.hub.stats(i).dropped;
                }
                s.dropped = s.cameras.iter().map(|c| c.dropped).sum();
                let id = hub_id(&e.hub);
                let mut slot = 0;
                s.cameras.retain(|c| {
                    slot += 1;
                    current.get(&c.name) == Some(&(id, slot - 1))
                });
                s
            })
            .collect()
    }

    /// Frames analysed so far, all workers together.
    pub fn frames(&self) -> u64 {
        self.entries().iter().map(|e| e.done.load(std::sync::atomic::Ordering::Relaxed)).sum()
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

/// How the models of `loaded` are run: threads, providers, the TensorRT settings and cache.
pub fn session_options(loaded: &Loaded) -> SessionOptions {
    let cfg = &loaded.config;
    SessionOptions {
        threads: cfg.engine.threads,
        providers: cfg.engine.providers.clone(),
        cache_dir: Some(cfg.engine.cache_dir.clone().unwrap_or_else(|| cfg.state_dir.join("engine-cache"))),
        tensorrt: crate::engine::tensorrt::TrtSettings {
            precision: crate::engine::tensorrt::Precision::parse(
                &cfg.engine.precision,
                cfg.engine.int8_calibration_table.as_deref(),
            )
            .unwrap_or_default(),
            dla_core: cfg.engine.dla_core,
            batch_max: cfg.engine.batch_max,
        },
    }
}

fn lifecycle_config(loaded: &Loaded) -> LifecycleConfig {
    let e = &loaded.config.events;
    LifecycleConfig {
        min_track_age: e.min_track_age,
        heartbeat: Duration::from_secs_f64(e.heartbeat_s),
        smoothing: e.smoothing,
        hysteresis: e.hysteresis,
    }
}

/// The settings an inference worker is built with, apart from its bundle.
fn worker_settings(loaded: &Loaded) -> impl PartialEq {
    let c = &loaded.config;
    let mut engine = c.engine.clone();
    engine.bundle = PathBuf::new();
    (engine, c.events.clone(), c.tracker.clone(), c.state_dir.clone())
}

/// A bundle folder and its lanes' analyzers, loaded before a reload takes the lock.
type Prepared = (PathBuf, Vec<Analyzer>);

/// Loads `dir` once per inference lane (each lane owns its sessions).
fn load_analyzers(loaded: &Loaded, opts: &SessionOptions, dir: &Path) -> Result<Vec<Analyzer>, PipelineError> {
    let cfg = &loaded.config;
    let (lanes, threads) = opts.lanes_and_threads(cfg.engine.lanes, cfg.engine.threads);
    let opts = SessionOptions { threads, ..opts.clone() };
    (0..lanes)
        .map(|_| {
            Bundle::load(dir, &opts)
                .map(|bundle| Analyzer::new(bundle, cfg.engine.batch_max))
                .map_err(|source| PipelineError::Bundle { path: dir.display().to_string(), source })
        })
        .collect()
}

fn bundle_of(loaded: &Loaded, cam: &CameraConfig) -> PathBuf {
    cam.bundle.clone().unwrap_or_else(|| loaded.config.engine.bundle.clone())
}

impl Inner {
    /// The worker for `dir`, started (bundle loaded) if there is none yet.
    fn worker(&mut self, dir: &PathBuf) -> Result<&Worker, PipelineError> {
        if !self.workers.contains_key(dir) {
            let analyzers = load_analyzers(&self.loaded, &self.opts, dir)?;
            self.install_worker(dir, analyzers)?;
        }
        self.workers.get(dir).ok_or_else(|| PipelineError::NoCamera("worker vanished".into()))
    }

    /// Starts the inference thread for `dir` on analyzers already loaded.
    fn install_worker(&mut self, dir: &Path, analyzers: Vec<Analyzer>) -> Result<(), PipelineError> {
        let cfg = &self.loaded.config;
        let lanes = analyzers.len();
        if let Some(a) = analyzers.first() {
            let m = a.manifest();
            tracing::info!(
                bundle = %m.name,
                version = %m.version,
                sha256 = %&m.sha256[..12.min(m.sha256.len())],
                path = %dir.display(),
                debias = if a.debias() { "on" } else { "off (no context branch: events carry factual scores)" },
                lanes,
                threads = self.opts.lanes_and_threads(cfg.engine.lanes, cfg.engine.threads).1,
                "engine bundle loaded; inference lanes ready"
            );
        }
        let hub: Arc<FrameHub<Frame>> = Arc::new(FrameHub::new(0));
        hub.set_waiting_depth(lanes);
        let cameras = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let setup = worker::WorkerSetup {
            done: done.clone(),
            hub: hub.clone(),
            cameras: cameras.clone(),
            lifecycle: self.lifecycle.clone(),
            track_ids: self.track_ids.clone(),
            batching: Batching {
                max_frames: if cfg.engine.batching { cfg.engine.batch_max } else { 1 },
                linger: Duration::from_secs_f64(cfg.engine.batch_timeout_ms / 1000.0),
            },
            sink: (self.sink)(),
        };
        let (handle, live) = worker::spawn(analyzers, &self.loaded, setup)
            .map_err(|e| PipelineError::NoCamera(format!("cannot start the inference thread: {e}")))?;
        if let Ok(mut w) = self.probe.workers.lock() {
            w.push(ProbeEntry { hub: hub.clone(), done, live });
        }
        self.workers.insert(dir.to_path_buf(), Worker { hub, cameras, handle: Some(handle) });
        Ok(())
    }

    /// Starts one camera under a supervisor, in a new slot of its bundle's hub.
    fn start_camera(&mut self, name: &str, cam: &CameraConfig) -> Result<(), PipelineError> {
        let dir = bundle_of(&self.loaded, cam);
        let sup_cfg = self.loaded.config.supervisor.clone();
        let failures = self.failures.clone();
        let status_sink = Mutex::new((self.sink)());
        let worker = self.worker(&dir)?;
        let hub = worker.hub.clone();
        let slot = hub.add_slot();
        if let Ok(mut c) = worker.cameras.lock() {
            c.push(worker::SlotCamera { name: name.to_string(), filter: cam.face_filter() });
        }
        if let Ok(mut current) = self.probe.current.lock() {
            current.insert(name.to_string(), (hub_id(&hub), slot));
        }
        let uri = match &cam.password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read password_file {}: {e}", f.display()))
                .and_then(|pw| crate::source::with_password(&cam.uri, pw.trim_end_matches(['\r', '\n']))),
            None => Ok(cam.uri.clone()),
        };
        let spec = match uri.and_then(|u| SourceSpec::parse(&u)) {
            Ok(spec) => spec,
            Err(reason) => {
                // check-config rejects these; a file deleted since then lands here.
                tracing::error!(camera = %name, error = %reason, "camera cannot start");
                failures.lock().map(|mut f| f.insert(name.to_string(), reason)).ok();
                hub.close(slot);
                return Ok(());
            }
        };
        let opts = SupervisorOptions {
            camera: CameraOptions {
                name: name.to_string(),
                spec,
                width: cam.width,
                looping: cam.looping,
                realtime: cam.realtime,
                fps_cap: cam.fps,
                rtsp_udp: cam.transport == "udp",
                rtsp_latency_ms: cam.latency_ms,
                decoder_threads: cam.decoder_threads,
                decoder: crate::source::DecoderChoice::parse(&cam.decoder).unwrap_or_default(),
            },
            backoff_initial: Duration::from_secs_f64(sup_cfg.backoff_initial_s),
            backoff_max: Duration::from_secs_f64(sup_cfg.backoff_max_s),
            stall_timeout: Duration::from_secs_f64(sup_cfg.stall_timeout_s),
        };
        // A file analysed as fast as possible waits for inference instead of dropping.
        let every_frame = matches!(opts.camera.spec, SourceSpec::File { .. }) && !cam.realtime;
        let (frames, resets, done, own) = (hub.clone(), hub.clone(), hub.clone(), hub);
        let supervisor = Supervisor::spawn(
            opts,
            Arc::new(move |frame| if every_frame { frames.put_waiting(slot, frame) } else { frames.put(slot, frame) }),
            Arc::new(move |status: &CameraStatus| {
                use crate::source::CameraState::{Failed, Reconnecting, Stalled};
                if matches!(status.status, Reconnecting | Stalled | Failed) {
                    resets.reset(slot);
                }
                if status.status == Failed {
                    let reason = status.last_error.clone().unwrap_or_default();
                    failures.lock().map(|mut f| f.insert(status.camera.clone(), reason)).ok();
                }
                if let Ok(mut s) = status_sink.lock() {
                    s.emit(Output::CameraState(status.clone()));
                }
            }),
            Box::new(move || done.close(slot)),
        );
        self.cameras.insert(
            name.to_string(),
            Running { name: name.to_string(), bundle: dir, hub: own, slot, config: cam.clone(), supervisor },
        );
        Ok(())
    }
}

impl Pipeline {
    /// Loads ONNX Runtime and the bundles, starts every enabled camera under its own
    /// supervisor, and one inference worker per bundle. A camera that fails is retried
    /// or reported without affecting the others.
    pub fn start<S: EventSink + Clone + Sync>(loaded: &Loaded, sink: S) -> Result<Pipeline, PipelineError> {
        runtime::init(loaded.config.engine.onnxruntime.as_deref())?;
        let factory: SinkFactory = Arc::new(move || Box::new(sink.clone()) as Box<dyn EventSink>);
        let mut inner = Inner {
            loaded: loaded.clone(),
            opts: session_options(loaded),
            lifecycle: lifecycle_config(loaded),
            track_ids: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            sink: factory,
            workers: BTreeMap::new(),
            retired: Vec::new(),
            cameras: BTreeMap::new(),
            failures: Arc::new(Mutex::new(BTreeMap::new())),
            probe: Probe { workers: Arc::default(), current: Arc::default(), last: Vec::new() },
            stopped: false,
        };
        for (name, cam) in loaded.config.cameras.iter().filter(|(_, c)| c.enabled) {
            inner.start_camera(name, cam)?;
        }
        if inner.cameras.is_empty() {
            let reasons =
                inner.failures.lock().map(|f| f.values().cloned().collect::<Vec<_>>().join("; ")).unwrap_or_default();
            return Err(PipelineError::NoCamera(reasons));
        }
        Ok(Pipeline { inner: Arc::new(Mutex::new(inner)) })
    }

    /// A progress probe for the watchdog and the metrics.
    pub fn probe(&self) -> Probe {
        self.inner.lock().map(|i| i.probe.clone()).unwrap_or_else(|_| Probe {
            workers: Arc::default(),
            current: Arc::default(),
            last: Vec::new(),
        })
    }

    /// A handle that stops or reloads the pipeline.
    pub fn control(&self) -> Control {
        Control { inner: self.inner.clone() }
    }

    /// Waits until every camera has ended and every worker has finished (including
    /// workers a reload started meanwhile).
    pub fn wait(self) -> Outcome {
        let mut summaries = Vec::new();
        loop {
            let next = self.inner.lock().ok().and_then(|mut i| {
                let i = &mut *i;
                i.workers.values_mut().chain(i.retired.iter_mut()).find_map(|w| w.handle.take())
            });
            match next {
                Some(h) => summaries.extend(h.join().ok()),
                None => break,
            }
        }
        Control { inner: self.inner.clone() }.stop();
        // Let go of the sink, so whoever reads the other end sees it close.
        if let Ok(mut i) = self.inner.lock() {
            i.sink = Arc::new(|| Box::new(Discard) as Box<dyn EventSink>);
        }
        let failures =
            self.inner.lock().ok().and_then(|i| i.failures.lock().ok().map(|f| f.clone())).unwrap_or_default();
        Outcome { summaries, failures }
    }
}

impl Control {
    /// Stops every camera; workers then finish their frame, end tracks and return.
    pub fn stop(&self) {
        let cams: Vec<Running> = match self.inner.lock() {
            Ok(mut i) => {
                i.stopped = true;
                std::mem::take(&mut i.cameras).into_values().collect()
            }
            Err(_) => return,
        };
        for cam in cams {
            // Close the slot first: a camera waiting to hand in a frame lets go at once.
            cam.hub.close(cam.slot);
            cam.supervisor.stop();
        }
    }

    /// Applies a new, already validated configuration: starts new cameras, restarts
    /// cameras whose section changed, stops removed ones, leaves the rest alone. New
    /// cameras start before old ones stop, so a worker never sees all its cameras gone.
    ///
    /// Bundles the new configuration needs are loaded first, without holding the lock a
    /// stop needs; if one cannot be loaded the reload is refused and nothing changes.
    pub fn reload(&self, loaded: &Loaded) -> Result<ReloadReport, PipelineError> {
        let Some(prepared) = self.prepare(loaded)? else { return Ok(ReloadReport::default()) };
        let mut report = ReloadReport::default();
        let mut to_stop = Vec::new();
        let mut sink = None;
        {
            let Ok(mut inner) = self.inner.lock() else { return Ok(report) };
            if inner.stopped {
                return Ok(report);
            }
            let wanted: BTreeMap<&String, &CameraConfig> =
                loaded.config.cameras.iter().filter(|(_, c)| c.enabled).collect();
            let old = std::mem::replace(&mut inner.loaded, loaded.clone());
            // Engine, events and tracker settings live in the workers: when they change,
            // every camera moves to new workers built with the new settings.
            let workers_changed = worker_settings(&old) != worker_settings(loaded);
            if workers_changed {
                inner.opts = session_options(loaded);
                inner.lifecycle = lifecycle_config(loaded);
                let retired = std::mem::take(&mut inner.workers);
                if let Ok(mut probe) = inner.probe.workers.lock() {
                    probe.retain(|e| !retired.values().any(|r| Arc::ptr_eq(&r.hub, &e.hub)));
                }
                inner.retired.extend(retired.into_values());
                report.workers_restarted = true;
            }
            for (dir, analyzers) in prepared {
                if !inner.workers.contains_key(&dir) {
                    inner.install_worker(&dir, analyzers)?;
                }
            }
            for (name, running) in std::mem::take(&mut inner.cameras) {
                match wanted.get(&name) {
                    Some(cam)
                        if !workers_changed && **cam == running.config && bundle_of(loaded, cam) == running.bundle =>
                    {
                        report.unchanged.push(name.clone());
                        inner.cameras.insert(name, running);
                    }
                    Some(_) => {
                        report.changed.push(name.clone());
                        to_stop.push(running);
                    }
                    None => {
                        report.removed.push(name.clone());
                        if let Ok(mut current) = inner.probe.current.lock() {
                            current.remove(&name);
                        }
                        to_stop.push(running);
                    }
                }
            }
            for (name, cam) in &wanted {
                if inner.cameras.contains_key(*name) {
                    continue;
                }
                if !report.changed.contains(name) {
                    report.added.push((*name).clone());
                }
                if let Err(e) = inner.start_camera(name, cam) {
                    // Its bundle was loaded above: only a thread that cannot start lands
                    // here. The other cameras go on.
                    tracing::error!(camera = %name, error = %e, "cannot start camera after reload");
                    inner.failures.lock().map(|mut f| f.insert((*name).clone(), e.to_string())).ok();
                }
            }
            if !report.removed.is_empty() {
                sink = Some((inner.sink)());
            }
        }
        for running in to_stop {
            tracing::info!(camera = %running.name, "stopping camera (reload)");
            running.hub.close(running.slot);
            running.supervisor.stop();
        }
        // After the supervisors have stopped, so this comes after their last state.
        if let Some(mut sink) = sink {
            for name in &report.removed {
                sink.emit(Output::CameraRemoved(name.clone()));
            }
        }
        Ok(report)
    }

    /// Loads, outside the lock, every bundle `loaded` needs that has no worker yet (all
    /// of them when the workers' settings change). `None` when the pipeline has stopped.
    fn prepare(&self, loaded: &Loaded) -> Result<Option<Vec<Prepared>>, PipelineError> {
        let (needed, opts) = {
            let Ok(inner) = self.inner.lock() else { return Ok(None) };
            if inner.stopped {
                return Ok(None);
            }
            let all = worker_settings(&inner.loaded) != worker_settings(loaded);
            let mut dirs: Vec<PathBuf> = loaded
                .config
                .cameras
                .values()
                .filter(|c| c.enabled)
                .map(|c| bundle_of(loaded, c))
                .filter(|d| all || !inner.workers.contains_key(d))
                .collect();
            dirs.sort();
            dirs.dedup();
            (dirs, session_options(loaded))
        };
        let mut prepared = Vec::with_capacity(needed.len());
        for dir in needed {
            let analyzers = load_analyzers(loaded, &opts, &dir)?;
            prepared.push((dir, analyzers));
        }
        Ok(Some(prepared))
    }
}
