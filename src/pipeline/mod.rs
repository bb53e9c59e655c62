//! Wires the parts together: cameras (source) feed latest-frame hubs; one inference
//! worker per bundle, on its own thread, runs detection, tracking, the models and CLEF,
//! and turns tracks into events for an [`EventSink`]. Nothing here knows about MQTT or
//! systemd: the caller decides where events go.

pub mod analyze;
mod breaker;
mod cadence;
mod fault;
pub mod hub;
pub mod lanes;
mod options;
mod probe;
mod rates;
mod reload;
mod rescue;
pub mod snapshot;
mod stats;
mod tracking;
pub mod view;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::engine::Bundle;
use crate::events::EmotionEvent;
use crate::source::{CameraStatus, Frame, SourceSpec, Supervisor};
use analyze::Analyzer;
use hub::FrameHub;
pub use options::{Cadence, CameraPlan, PipelineOptions, WorkerOptions};
pub use probe::{CameraView, Probe};
use probe::{ProbeEntry, hub_id};
pub use reload::ReloadReport;
use rescue::Tended;
pub use stats::{Batching, CameraSummary, LatencyHistogram, RunSummary, StageTotals};

/// What the pipeline produces.
#[derive(Debug, Clone)]
pub enum Output {
    /// An emotion event (its `seq` is stamped by whoever publishes it).
    Event(Box<EmotionEvent>),
    /// A camera changed state (or reports its fps while streaming).
    CameraState(CameraStatus),
    /// A reload removed this camera; nothing more comes from it.
    CameraRemoved(String),
    /// A face's picture, sent just before its track's `new` event (snapshots on).
    Snapshot(Box<snapshot::Snapshot>),
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
    /// A panic left the pipeline's own state behind a poisoned lock: clefd must restart
    /// (the watchdog and `/healthz` say so from now on).
    #[error("a panic left the pipeline's state inconsistent; clefd must be restarted")]
    Poisoned,
}

/// Takes the pipeline's lock; a poisoned one marks the pipeline broken (the probe stops
/// reporting progress, so the watchdog fires and `/healthz` fails) and is an error.
fn lock(inner: &Mutex<Inner>) -> Result<std::sync::MutexGuard<'_, Inner>, PipelineError> {
    inner.lock().map_err(|poisoned| {
        poisoned.into_inner().probe.set_broken("the pipeline's state");
        PipelineError::Poisoned
    })
}

/// One inference worker: a bundle, its hub and its thread.
struct Worker {
    hub: Arc<FrameHub<Frame>>,
    cameras: Arc<Mutex<BTreeMap<usize, worker::SlotCamera>>>,
    handle: Option<std::thread::JoinHandle<RunSummary>>,
}

impl Worker {
    /// Whether it still takes cameras: a worker whose cameras have all ended has left
    /// (or is leaving), and one whose thread is over, however it ended, takes nothing: a
    /// new one must start for the next camera of its bundle.
    fn alive(&self) -> bool {
        !self.hub.is_finished() && self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

/// Where a camera generation's state reports go; emptied when the generation is being
/// replaced or removed, so a late report of the old one never lands after the new one's.
type Reports = Arc<Mutex<Option<Box<dyn EventSink>>>>;

/// One running camera.
struct Running {
    name: String,
    hub: Arc<FrameHub<Frame>>,
    slot: usize,
    plan: CameraPlan,
    supervisor: Supervisor,
    reports: Reports,
}

impl Running {
    /// Says nothing more for this generation: a report on its way is waited for, later
    /// ones are dropped (the generation that replaces it, or the removal, speaks now).
    fn silence(&self) {
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The sink of a finished pipeline.
struct Discard;

impl EventSink for Discard {
    fn emit(&mut self, _: Output) -> bool {
        false
    }
}

type SinkFactory = Arc<dyn Fn() -> Box<dyn EventSink> + Send + Sync>;

/// A bundle folder and its lanes' analyzers, loaded before a reload takes the lock.
type Prepared = (PathBuf, Vec<Analyzer>);

struct Inner {
    options: PipelineOptions,
    track_ids: Arc<AtomicU64>,
    sink: SinkFactory,
    workers: BTreeMap<PathBuf, Worker>,
    /// Workers replaced by a reload that changed their settings, or that ended with their
    /// last camera; they finish once their cameras are gone and are joined as soon as
    /// they have (see [`Inner::reap`]), or by [`Pipeline::wait`].
    retired: Vec<Worker>,
    cameras: BTreeMap<String, Running>,
    failures: Arc<Mutex<BTreeMap<String, String>>>,
    probe: Probe,
    stopped: bool,
    /// The joined workers' summaries folded per bundle: bounded by the number of bundles
    /// however many workers a long run starts.
    totals: BTreeMap<String, RunSummary>,
    /// When each bundle's workers ended abnormally (and which hub each was), within the
    /// last [`rescue::RESCUE_WINDOW`].
    rescues: BTreeMap<PathBuf, std::collections::VecDeque<(std::time::Instant, usize)>>,
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

/// What the run ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per-worker summaries.
    pub summaries: Vec<RunSummary>,
    /// Cameras that ended with an error, and why.
    pub failures: BTreeMap<String, String>,
}

/// Loads `dir` once per inference lane (each lane owns its sessions).
fn load_analyzers(workers: &WorkerOptions, dir: &Path) -> Result<Vec<Analyzer>, PipelineError> {
    let (lanes, threads) = workers.session.lanes_and_threads(workers.lanes, workers.threads);
    let opts = crate::engine::runtime::SessionOptions { threads, ..workers.session.clone() };
    // Faces per classifier batch: as many as the engines' profiles cover.
    let faces = workers.session.tensorrt.batch_max;
    (0..lanes)
        .map(|_| {
            Bundle::load_accepted(dir, &opts)
                .map(|bundle| Analyzer::new(bundle, faces))
                .map_err(|source| PipelineError::Bundle { path: dir.display().to_string(), source })
        })
        .collect()
}

impl Inner {
    /// The worker for `dir`, started (bundle loaded) if there is none yet or the one
    /// there has ended with its last camera.
    fn worker(&mut self, dir: &PathBuf) -> Result<&Worker, PipelineError> {
        if self.workers.get(dir).is_some_and(|w| !w.alive()) {
            self.bury(dir);
        }
        if !self.workers.contains_key(dir) {
            let analyzers = load_analyzers(&self.options.workers, dir)?;
            self.install_worker(dir, analyzers)?;
        }
        self.workers.get(dir).ok_or_else(|| PipelineError::NoCamera("worker vanished".into()))
    }

    /// Moves the worker of `dir` out of the way (it has ended, or is replaced): it is
    /// joined once its thread is over.
    fn bury(&mut self, dir: &Path) {
        if let Some(old) = self.workers.remove(dir) {
            tracing::info!(path = %dir.display(), "the bundle's inference worker has ended; a new one takes its cameras");
            self.probe.remove(&old.hub);
            old.hub.retire();
            self.retired.push(old);
        }
        self.reap();
    }

    /// Joins the retired workers whose thread is over, so their models and statistics
    /// are freed now rather than at exit (their figures are folded into the totals).
    fn reap(&mut self) {
        let totals = &mut self.totals;
        self.retired.retain_mut(|w| {
            let Some(h) = w.handle.take_if(|h| h.is_finished()) else { return w.handle.is_some() };
            if let Ok(s) = h.join() {
                tracing::info!(bundle = %s.bundle, frames = s.frames, events = s.events, "inference worker ended");
                stats::fold(totals, s);
            }
            false
        });
    }

    /// Starts the inference thread for `dir` on analyzers already loaded (replacing a
    /// worker there that has ended).
    fn install_worker(&mut self, dir: &Path, analyzers: Vec<Analyzer>) -> Result<(), PipelineError> {
        if self.workers.contains_key(dir) {
            self.bury(dir);
        }
        let w = &self.options.workers;
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
                threads = w.session.lanes_and_threads(w.lanes, w.threads).1,
                "engine bundle loaded; inference lanes ready"
            );
        }
        let hub: Arc<FrameHub<Frame>> = Arc::new(FrameHub::new(0));
        hub.set_waiting_depth(lanes);
        let cameras = Arc::new(Mutex::new(BTreeMap::new()));
        let done = Arc::new(AtomicU64::new(0));
        let setup = worker::WorkerSetup {
            done: done.clone(),
            hub: hub.clone(),
            cameras: cameras.clone(),
            options: w.clone(),
            track_ids: self.track_ids.clone(),
            sink: (self.sink)(),
            views: self.probe.views.clone(),
            failures: self.probe.worker_failures.clone(),
        };
        let (handle, live) = worker::spawn(analyzers, setup)
            .map_err(|e| PipelineError::NoCamera(format!("cannot start the inference thread: {e}")))?;
        let entry = ProbeEntry { hub: hub.clone(), done, live };
        self.probe.guard(&self.probe.workers, "the list of inference workers").push(entry);
        self.workers.insert(dir.to_path_buf(), Worker { hub, cameras, handle: Some(handle) });
        Ok(())
    }

    /// A new slot for camera `name` in the hub of its bundle's worker (a new worker if
    /// the last one has ended meanwhile).
    fn open_slot(&mut self, name: &str, plan: &CameraPlan) -> Result<(Arc<FrameHub<Frame>>, usize), PipelineError> {
        let probe = self.probe.clone();
        for _ in 0..2 {
            let worker = self.worker(&plan.bundle)?;
            let mut registry = probe.guard(&worker.cameras, "a worker's camera registry");
            // Under the registry's lock: the worker finds the camera as soon as its slot
            // exists.
            let Some(slot) = worker.hub.add_slot() else { continue };
            registry.insert(
                slot,
                worker::SlotCamera {
                    name: name.to_string(),
                    filter: plan.filter.clone(),
                    cadence: plan.cadence,
                    snapshots: plan.snapshots,
                },
            );
            return Ok((worker.hub.clone(), slot));
        }
        Err(PipelineError::NoCamera(format!("{name}: its bundle's inference worker ended as the camera started")))
    }

    /// Starts one camera under a supervisor, in a new slot of its bundle's hub.
    fn start_camera(&mut self, name: &str, plan: &CameraPlan) -> Result<(), PipelineError> {
        self.reap();
        let (failures, probe) = (self.failures.clone(), self.probe.clone());
        let reports: Reports = Arc::new(Mutex::new(Some((self.sink)())));
        let status_sink = reports.clone();
        let (hub, slot) = self.open_slot(name, plan)?;
        self.probe
            .guard(&self.probe.current, "the map of the cameras' slots")
            .insert(name.to_string(), (hub_id(&hub), slot));
        // A file analysed as fast as possible waits for inference instead of dropping.
        let camera = &plan.source.camera;
        let every_frame = matches!(camera.spec, SourceSpec::File { .. }) && !camera.realtime;
        let (frames, resets, done, own) = (hub.clone(), hub.clone(), hub.clone(), hub);
        let supervisor = Supervisor::spawn(
            plan.source.clone(),
            Arc::new(move |frame| if every_frame { frames.put_waiting(slot, frame) } else { frames.put(slot, frame) }),
            Arc::new(move |status: &CameraStatus| {
                use crate::source::CameraState::{Failed, Reconnecting, Stalled};
                // Held while reporting, so that [`Running::silence`] waits for this report.
                let mut sink = probe.guard(&status_sink, "a camera's state reports");
                let Some(sink) = sink.as_mut() else { return };
                if matches!(status.status, Reconnecting | Stalled | Failed) {
                    resets.reset(slot);
                }
                if status.status == Failed {
                    let reason = status.last_error.clone().unwrap_or_default();
                    probe.guard(&failures, "the cameras' failures").insert(status.camera.clone(), reason);
                }
                sink.emit(Output::CameraState(status.clone()));
            }),
            Box::new(move || done.close(slot)),
        );
        let running = Running { name: name.to_string(), hub: own, slot, plan: plan.clone(), supervisor, reports };
        self.cameras.insert(name.to_string(), running);
        Ok(())
    }
}

impl Pipeline {
    /// Loads the bundles, starts every camera of `options` under its own supervisor, and
    /// one inference worker per bundle. A camera that fails is retried or reported without
    /// affecting the others. ONNX Runtime must be loaded (`engine::runtime::init`).
    pub fn start<S: EventSink + Clone + Sync>(options: PipelineOptions, sink: S) -> Result<Pipeline, PipelineError> {
        let factory: SinkFactory = Arc::new(move || Box::new(sink.clone()) as Box<dyn EventSink>);
        let mut inner = Inner {
            options: options.clone(),
            track_ids: Arc::new(AtomicU64::new(0)),
            sink: factory,
            workers: BTreeMap::new(),
            retired: Vec::new(),
            cameras: BTreeMap::new(),
            failures: Arc::new(Mutex::new(BTreeMap::new())),
            probe: Probe::empty(),
            stopped: false,
            totals: BTreeMap::new(),
            rescues: BTreeMap::new(),
        };
        for (name, plan) in &options.cameras {
            inner.start_camera(name, plan)?;
        }
        if inner.cameras.is_empty() {
            let failures = inner.probe.guard(&inner.failures, "the cameras' failures");
            let reasons = failures.values().cloned().collect::<Vec<_>>().join("; ");
            drop(failures);
            return Err(PipelineError::NoCamera(reasons));
        }
        Ok(Pipeline { inner: Arc::new(Mutex::new(inner)) })
    }

    /// A progress probe for the watchdog and the metrics.
    pub fn probe(&self) -> Probe {
        match lock(&self.inner) {
            Ok(i) => i.probe.clone(),
            Err(_) => self.inner.lock().unwrap_or_else(|p| p.into_inner()).probe.clone(),
        }
    }
    /// A handle that stops or reloads the pipeline.
    pub fn control(&self) -> Control {
        Control { inner: self.inner.clone() }
    }

    /// Waits until every camera has ended and every worker has finished (including
    /// workers a reload started meanwhile). With no camera running at all (every one
    /// disabled or removed), or while a disabled camera may still be enabled, it waits for
    /// the next one, or for [`Control::stop`]. Meanwhile
    /// it looks after the workers: one that ends abnormally has its cameras moved to a new
    /// worker (or, when that keeps happening, the run ends with a failure).
    pub fn wait(self) -> Outcome {
        let control = Control { inner: self.inner.clone() };
        loop {
            let failure = match lock(&self.inner).map(|mut i| (i.probe.broken(), i.tend())) {
                // A poisoned lock anywhere: the run ends non-zero, so systemd restarts us.
                Ok((Some(broken), _)) => Some(broken),
                Ok((None, tended)) => match tended {
                    Tended { gave_up: Some(reason), orphans, .. } => {
                        // They showed `streaming` last: say they are stopped, and why, first.
                        control.report_failed(orphans.iter().map(|r| r.name.clone()), &reason);
                        stop_cameras(orphans);
                        Some(reason)
                    }
                    Tended { orphans, .. } if !orphans.is_empty() => control.rescue(orphans).err(),
                    Tended { over: true, .. } => break,
                    _ => {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        None
                    }
                },
                Err(e) => Some(e.to_string()),
            };
            if let Some(reason) = failure {
                // Not a normal end: the failure makes clefd exit non-zero.
                tracing::error!("{reason}");
                let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                inner.failures.lock().unwrap_or_else(|p| p.into_inner()).insert("pipeline".into(), reason);
                break;
            }
        }
        control.stop();
        // The workers finish once their cameras are gone; their figures go to the totals.
        loop {
            let handle = {
                let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                let i = &mut *i;
                i.workers.values_mut().chain(i.retired.iter_mut()).find_map(|w| w.handle.take())
            };
            let Some(handle) = handle else { break };
            if let Ok(summary) = handle.join() {
                stats::fold(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).totals, summary);
            }
        }
        // Let go of the sink, so whoever reads the other end sees it close.
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.sink = Arc::new(|| Box::new(Discard) as Box<dyn EventSink>);
        let failures = i.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let summaries = std::mem::take(&mut i.totals).into_values().collect();
        drop(i);
        Outcome { summaries, failures }
    }
}

/// Stops cameras all at once: every slot is closed (a camera waiting to hand in a frame
/// lets go at once) and every supervisor asked to stop before any is waited for.
fn stop_cameras(cams: Vec<Running>) {
    for cam in &cams {
        cam.hub.close(cam.slot);
        cam.supervisor.ask_to_stop();
    }
    for cam in cams {
        cam.supervisor.stop();
    }
}

impl Control {
    /// Stops every camera; workers then finish their frame, end tracks and return.
    pub fn stop(&self) {
        // A stop always happens, poisoned lock or not (it only takes the cameras out).
        let cams: Vec<Running> = {
            let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            i.stopped = true;
            std::mem::take(&mut i.cameras).into_values().collect()
        };
        stop_cameras(cams);
    }
}
