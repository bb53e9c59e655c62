//! The inference worker: a dedicated thread per bundle that takes the newest frame of
//! each camera (several cameras at once, batched), has its lanes analyse them, and turns
//! the results into events, each camera's frames in order.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::EventSink;
use super::analyze::Analyzer;
use super::hub::{FrameHub, Next};
use super::lanes::LanePool;
use super::stats::{Batching, CameraSummary, RunSummary};
use super::tracking::{CameraTracks, Tracking};
use crate::detect::filter::FaceFilter;
use crate::events::BundleRef;
use crate::events::lifecycle::{Lifecycle, Source};
use crate::source::Frame;
use crate::track::Tracker;

/// The camera in one hub slot, as the worker needs it.
#[derive(Debug, Clone)]
pub(super) struct SlotCamera {
    /// Camera name.
    pub name: String,
    /// The faces it cares about.
    pub filter: FaceFilter,
    /// How often its faces are detected and classified.
    pub cadence: super::Cadence,
    /// Snapshots of its faces, when they are on.
    pub snapshots: bool,
}

/// Everything a worker needs besides its analyzer.
pub(super) struct WorkerSetup<S> {
    pub done: Arc<AtomicU64>,
    pub hub: Arc<FrameHub<Frame>>,
    /// The camera per hub slot, while it runs.
    pub cameras: Arc<Mutex<std::collections::BTreeMap<usize, SlotCamera>>>,
    /// Lifecycle, tracker, batching, device id.
    pub options: super::WorkerOptions,
    pub track_ids: Arc<AtomicU64>,
    pub sink: S,
    /// The live views, which ask for copies of the frames someone looks at.
    pub views: super::view::Views,
    /// Counts workers that ended without being told `Done` (shared by all workers).
    pub failures: Arc<AtomicU64>,
}

/// Starts the worker thread (and its lanes); returns it and its live statistics.
pub(super) fn spawn<S: EventSink>(
    analyzers: Vec<Analyzer>,
    setup: WorkerSetup<S>,
) -> std::io::Result<(std::thread::JoinHandle<RunSummary>, Arc<Mutex<RunSummary>>)> {
    let WorkerSetup { done, hub, cameras, options, track_ids, sink, views, failures } = setup;
    let super::WorkerOptions { device_id, lifecycle, tracker: tracker_cfg, batching, snapshot_px, .. } = options;
    let analyzer = analyzers.first().ok_or_else(|| std::io::Error::other("a worker needs at least one lane"))?;
    let m = analyzer.manifest();
    let name = m.name.clone();
    let provider = analyzer.provider().to_string();
    let source = Source {
        device: device_id,
        camera: String::new(),
        labels: m.labels.clone(),
        bundle: BundleRef { name: m.name.clone(), sha256: m.sha256.clone() },
        task: analyzer.task().clone(),
        debias: analyzer.debias(),
        run: crate::events::run_id().to_string(),
    };
    let labels = source.labels.clone();
    let ring = hub.clone();
    let pool: LanePool<Frame> =
        LanePool::start(&format!("infer-{name}"), analyzers, batching.max_frames, Arc::new(move || ring.ring()))?;
    let live = setup_live(&name, &[]);
    {
        let mut l = views.breaker().guard(&live, "an inference worker's statistics");
        l.lanes = pool.lanes();
        l.provider = provider;
    }
    let tracking = Tracking {
        states: Default::default(),
        registry: cameras,
        make_state: Box::new(move |camera: &str, cadence: super::Cadence| CameraTracks {
            name: camera.to_string(),
            tracker: tracker_for(&tracker_cfg, cadence, track_ids.clone()),
            lifecycle: Lifecycle::new(lifecycle.clone(), Source { camera: camera.to_string(), ..source.clone() }),
            stream: 0,
            filter: FaceFilter::default(),
            follow: super::cadence::Follow::new(cadence),
            snapshots: true,
        }),
        live: live.clone(),
        done,
        sink,
        snapshot_px,
        views,
        labels,
    };
    let worker = Worker {
        pool,
        hub: hub.clone(),
        tracking,
        batching,
        first: None,
        panics_seen: 0,
        fault: Fault::from_env(&name),
    };
    let guard = EndGuard { hub, bundle: name.clone(), failures, normal: false };
    std::thread::Builder::new()
        .name(format!("worker-{name}"))
        .spawn(move || {
            let mut guard = guard;
            let summary = worker.run(&mut guard);
            drop(guard);
            summary
        })
        .map(|handle| (handle, live))
}

/// Watches the worker thread's end: however it ends short of `Done` (a panic outside the
/// lanes, its sink or its lanes gone), the hub is abandoned, so its cameras let go at once
/// and the pipeline moves them to a new worker instead of feeding a hub nobody reads.
struct EndGuard {
    hub: Arc<FrameHub<Frame>>,
    bundle: String,
    failures: Arc<AtomicU64>,
    /// Set once the worker was told `Done`.
    normal: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.normal {
            return;
        }
        let how = if std::thread::panicking() { "it panicked" } else { "its sink or its lanes are gone" };
        tracing::error!(bundle = %self.bundle, "the inference worker ended abnormally ({how}); its cameras move to a new one");
        self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.hub.abandon();
    }
}

/// Fault injection for the tests, `CLEFD_TEST_WORKER_FAULT=panic:N` or `stop:N`: the first
/// worker of the process to take its N-th batch panics outside the lanes, or stops as if
/// its sink had closed. Fires once per process, so the worker that replaces it runs on;
/// `stops:N` fires in every worker (one that keeps failing, until clefd gives up);
/// `wedge:N` hangs the worker (as a hung inference would) until its cameras all stop.
/// `CLEFD_TEST_WORKER_FAULT_BUNDLE` limits it to the workers of the bundle of that name.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Panic(u64),
    Stop(u64),
    Stops(u64),
    Wedge(u64),
}

/// Whether the injected fault has fired in this process.
static FAULT_FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Fault {
    fn from_env(bundle: &str) -> Fault {
        let Ok(v) = std::env::var("CLEFD_TEST_WORKER_FAULT") else { return Fault::None };
        if std::env::var("CLEFD_TEST_WORKER_FAULT_BUNDLE").is_ok_and(|b| b != bundle) {
            return Fault::None;
        }
        let (kind, n) = v.split_once(':').unwrap_or((v.as_str(), "1"));
        let n = n.parse().unwrap_or(1);
        match kind {
            "panic" => Fault::Panic(n),
            "stop" => Fault::Stop(n),
            "stops" => Fault::Stops(n),
            "wedge" => Fault::Wedge(n),
            _ => Fault::None,
        }
    }

    /// Whether to stop now, at batch `taken`; panics or hangs when the fault says so.
    fn strikes(self, taken: u64, hub: &FrameHub<Frame>) -> bool {
        if let Fault::Stops(at) = self {
            return taken >= at;
        }
        if let Fault::Wedge(at) = self {
            if taken >= at && !FAULT_FIRED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!("CLEFD_TEST_WORKER_FAULT: the inference worker hangs (fault injection)");
                while hub.any_open() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            return false;
        }
        let (Fault::Panic(at) | Fault::Stop(at)) = self else { return false };
        if taken < at || FAULT_FIRED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        if matches!(self, Fault::Panic(_)) {
            panic!("CLEFD_TEST_WORKER_FAULT: the inference worker panics (fault injection)");
        }
        true
    }
}

/// The worker thread's state: the lanes, the hub frames come from, the trackers.
struct Worker<S> {
    pool: LanePool<Frame>,
    hub: Arc<FrameHub<Frame>>,
    tracking: Tracking<S>,
    batching: Batching,
    /// When the first frame was taken.
    first: Option<Instant>,
    /// Lane panics already in the live statistics.
    panics_seen: u64,
    /// Injected fault (tests only; see [`Fault`]).
    fault: Fault,
}

/// What a step of the worker leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Go on.
    Go,
    /// The hub said `Done`: every camera has ended (or the pipeline stops).
    Done,
    /// The sink or the lanes are gone: the worker cannot go on.
    Broken,
}

impl<S: EventSink> Worker<S> {
    /// Feeds the lanes and tracks what they finish until every camera has ended or the
    /// sink has closed; the run's statistics.
    fn run(mut self, guard: &mut EndGuard) -> RunSummary {
        // Test hook: makes inference artificially slow (watchdog and back-pressure tests).
        let test_delay = std::env::var("CLEFD_TEST_INFERENCE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let mut batches = 0u64;
        let flow = loop {
            match self.step(test_delay, &mut batches) {
                Flow::Go => {}
                end => break end,
            }
        };
        guard.normal = flow == Flow::Done;
        let Worker { pool, hub, tracking, first, .. } = self;
        drop(pool);
        let mut summary = tracking.lock();
        summary.elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
        for cam in summary.cameras.iter_mut() {
            cam.dropped = hub.stats(cam.slot).dropped;
        }
        summary.dropped = summary.cameras.iter().map(|c| c.dropped).sum();
        summary.clone()
    }

    /// Tracks finished batches, then takes the next frames (or waits for a lane); whether
    /// to go on. `batches` counts the batches taken.
    fn step(&mut self, test_delay: Option<Duration>, batches: &mut u64) -> Flow {
        let panics = self.pool.panics();
        if panics != self.panics_seen {
            self.panics_seen = panics;
            self.tracking.lock().lane_panics = panics;
        }
        while let Some(finished) = self.pool.try_finished() {
            if !self.tracking.finish(finished) {
                return Flow::Broken;
            }
        }
        let free = self.pool.has_free_lane();
        if !free && !self.pool.has_room_to_queue() {
            if !self.pool.wait_any() {
                tracing::error!("the inference lanes have stopped");
                return Flow::Broken;
            }
            return Flow::Go;
        }
        // With a lane to spare, a frame starts at once: under load frames queue in the hub
        // while the lanes are busy and the next free lane takes them as one batch anyway.
        // Only a single lane (a GPU) waits for other cameras. With every lane busy, one
        // whole batch (a frame from each camera) may queue for the next lane to finish; a
        // ring from a finishing lane ends the wait.
        let (max, linger) = (self.batching.max_frames, self.batching.linger);
        let linger = if self.pool.lanes() > 1 { Duration::ZERO } else { linger };
        let next = if free { self.hub.next(max, linger) } else { self.hub.next_full(max) };
        match next {
            Next::Frames(frames) => {
                if let Some(d) = test_delay {
                    std::thread::sleep(d);
                }
                self.first.get_or_insert_with(Instant::now);
                *batches += 1;
                if self.fault.strikes(*batches, &self.hub) || super::fault::worker() {
                    return Flow::Broken;
                }
                let frames: Vec<(usize, Frame)> = frames.into_iter().filter(|(_, f)| f.view().is_some()).collect();
                if !frames.is_empty() {
                    let hints = frames.iter().map(|(slot, f)| self.tracking.hint(*slot, f.index)).collect();
                    self.pool.submit_hinted(frames, hints);
                    self.tracking.lock().in_flight = self.pool.in_flight();
                }
                Flow::Go
            }
            Next::Rung => Flow::Go,
            next @ (Next::Reset(_) | Next::Closed(_) | Next::Done) => {
                // Frames in flight came before this: track them first.
                while let Some(finished) = self.pool.wait_finished() {
                    if !self.tracking.finish(finished) {
                        return Flow::Broken;
                    }
                }
                match next {
                    Next::Reset(slot) => self.tracking.end_tracks(slot, false),
                    Next::Closed(slot) => {
                        // Nothing of this camera is in flight any more: its slot, tracker
                        // and statistics go.
                        self.tracking.end_tracks(slot, true);
                        self.hub.release(slot);
                    }
                    _ => return Flow::Done,
                }
                Flow::Go
            }
        }
    }
}

/// A camera's tracker. With the detector on every N-th frame (`detect_every`) it sees a
/// face once per N frames, N times as far along: the overlap it asks of a face and its
/// predicted box is N times smaller, and a face unseen for `max_missed` frames is still
/// dropped after about as many frames, not N times as many.
fn tracker_for(cfg: &crate::config::TrackerSettings, cadence: super::Cadence, ids: Arc<AtomicU64>) -> Tracker {
    let n = cadence.detect_every.max(1);
    Tracker::new(cfg.iou_threshold / n as f32, cfg.max_missed.div_ceil(n).max(1), ids)
}

fn setup_live(bundle: &str, cameras: &[String]) -> Arc<Mutex<RunSummary>> {
    Arc::new(Mutex::new(RunSummary {
        bundle: bundle.to_string(),
        cameras: cameras.iter().map(|c| CameraSummary { name: c.clone(), ..CameraSummary::default() }).collect(),
        ..RunSummary::default()
    }))
}
