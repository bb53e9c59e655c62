//! Inference lanes: threads that each own a copy of a bundle's sessions and analyse one
//! batch at a time, so that several batches are in flight at once.
//!
//! The models clefd runs are small (BlazeFace is 2 MB): ONNX Runtime cannot keep two
//! cores busy on one of them (measured here: one session with two intra-op threads runs
//! BlazeFace at 206 frames/s, with one thread at 218), but two sessions of one thread
//! each, on two frames at once, run 447 frames/s. So on the CPU clefd gives each core a
//! lane (one intra-op thread per session); on a GPU one lane is enough. A lane that is
//! done takes the next batch at once (no lane waits for another), and batches come back
//! in the order they went in, so tracking sees each camera's frames in order.
//!
//! A lane that panics on a batch does not take the worker with it: the panic is caught,
//! counted ([`LanePool::panics`]), and the batch comes back as failed (its frames are
//! dropped by the worker, which counts them), so the in-order hand-back never waits for
//! it; the lane then goes on with the next batch on the sessions it owns.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::analyze::{Analyzer, FaceAnalysis, Hint, StageTimes};
use crate::engine::runtime::EngineError;
use crate::image::ImageView;

/// Something with pixels to analyse: a camera frame, or a prepared picture.
pub trait Picture: Send + 'static {
    /// The pixels, if the buffer holds a whole picture.
    fn picture(&self) -> Option<ImageView<'_>>;
}

impl Picture for crate::source::Frame {
    fn picture(&self) -> Option<ImageView<'_>> {
        self.view()
    }
}

impl Picture for crate::image::RgbImage {
    fn picture(&self) -> Option<ImageView<'_>> {
        Some(self.view())
    }
}

/// Shared pictures, so one picture can sit in many batches (as in `clefd bench`).
impl<P: Picture + Sync> Picture for Arc<P> {
    fn picture(&self) -> Option<ImageView<'_>> {
        P::picture(self)
    }
}

/// A finished batch: its frames (tagged with their hub slot), and per frame the faces
/// found, or the error that stopped the batch.
pub struct Finished<T> {
    /// `(slot, frame)` pairs, as submitted.
    pub frames: Vec<(usize, T)>,
    /// Faces per frame (in order) and stage times, or why inference failed.
    pub result: Result<(Vec<Vec<FaceAnalysis>>, StageTimes), EngineError>,
}

struct Job<T> {
    id: u64,
    frames: Vec<(usize, T)>,
    /// Per frame, what its analysis may skip (empty: nothing).
    hints: Vec<Option<Arc<Hint>>>,
}

/// A fixed set of lanes fed from one queue.
pub struct LanePool<T> {
    jobs: Option<mpsc::Sender<Job<T>>>,
    finished: mpsc::Receiver<(u64, Finished<T>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    lanes: usize,
    /// Batches a lane panicked on.
    panics: Arc<AtomicU64>,
    next_id: u64,
    next_out: u64,
    /// Batches a lane has finished (and sent back) so far.
    received: u64,
    early: BTreeMap<u64, Finished<T>>,
}

impl<T: Picture> LanePool<T> {
    /// Starts one thread per analyzer (`name-N`); each runs batches of at most `per_run`
    /// frames per model run (1: one frame per run) and calls `on_finished` after each.
    pub fn start(
        name: &str,
        analyzers: Vec<Analyzer>,
        per_run: usize,
        on_finished: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<LanePool<T>> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job<T>>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, finished) = mpsc::channel();
        let lanes = analyzers.len();
        let panics = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(lanes);
        for (i, mut analyzer) in analyzers.into_iter().enumerate() {
            let (jobs, done, on_finished) = (jobs_rx.clone(), done_tx.clone(), on_finished.clone());
            let (lane, panicked) = (format!("{name}-{i}"), panics.clone());
            threads.push(std::thread::Builder::new().name(lane.clone()).spawn(move || {
                loop {
                    // Hold the lock only to take a job, never while analysing (so no
                    // panic can poison it; a poisoned one still holds a usable queue).
                    let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(Job { id, frames, hints }) = job else { return };
                    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        super::fault::lane();
                        analyze(&mut analyzer, &frames, &hints, per_run)
                    }));
                    let result = run.unwrap_or_else(|panic| {
                        panicked.fetch_add(1, Ordering::Relaxed);
                        let reason = panic_message(panic.as_ref());
                        tracing::error!(lane = %lane, frames = frames.len(), reason = %reason, "an inference lane panicked: its batch is dropped, the lane goes on");
                        Err(EngineError::Run { model: "lane".into(), reason: format!("the lane panicked: {reason}") })
                    });
                    if done.send((id, Finished { frames, result })).is_err() {
                        return;
                    }
                    on_finished();
                }
            })?);
        }
        Ok(LanePool {
            jobs: Some(jobs_tx),
            finished,
            threads,
            lanes,
            panics,
            next_id: 0,
            next_out: 0,
            received: 0,
            early: BTreeMap::new(),
        })
    }

    /// Number of lanes.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Batches a lane panicked on so far (each came back failed; the lane went on).
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Batches submitted and not yet handed back.
    pub fn in_flight(&self) -> usize {
        (self.next_id - self.next_out) as usize
    }

    /// Whether a lane would start on a batch submitted now. A lane that finished ahead of
    /// an older batch is free at once; batches waiting to be handed back in order are
    /// bounded (twice the lanes), so a stuck lane cannot make them pile up.
    pub fn has_free_lane(&self) -> bool {
        let running = (self.next_id - self.received) as usize;
        running < self.lanes && self.in_flight() < 2 * self.lanes
    }

    /// Whether one more batch may wait for a lane: every lane is busy and none is queued
    /// yet. A lane that finishes then starts on it at once instead of waiting for the
    /// worker to hand it the next batch (about 5 % of two cores with one camera). At most
    /// `2 × lanes + 1` batches are ever in flight.
    pub fn has_room_to_queue(&self) -> bool {
        let running = (self.next_id - self.received) as usize;
        running == self.lanes && self.in_flight() <= 2 * self.lanes
    }

    /// Waits until some lane finishes a batch (in any order); false if no lane is left.
    pub fn wait_any(&mut self) -> bool {
        if self.next_id == self.received {
            return true;
        }
        match self.finished.recv() {
            Ok((id, f)) => {
                self.received += 1;
                self.early.insert(id, f);
                true
            }
            Err(_) => false,
        }
    }

    /// Queues a batch for the next free lane.
    pub fn submit(&mut self, frames: Vec<(usize, T)>) {
        self.submit_hinted(frames, Vec::new());
    }

    /// Queues a batch with, per frame, what its analysis may skip (see [`Hint`]).
    pub fn submit_hinted(&mut self, frames: Vec<(usize, T)>, hints: Vec<Option<Arc<Hint>>>) {
        let id = self.next_id;
        self.next_id += 1;
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(Job { id, frames, hints }));
        if !matches!(sent, Some(Ok(()))) {
            // Every lane has gone (a lane can only go by panicking): report the batch lost.
            let reason = "the inference lanes have stopped".to_string();
            let result = Err(EngineError::Run { model: "lanes".into(), reason });
            self.received += 1;
            self.early.insert(id, Finished { frames: Vec::new(), result });
        }
    }

    /// The oldest batch if it is done, without waiting.
    pub fn try_finished(&mut self) -> Option<Finished<T>> {
        while let Ok((id, f)) = self.finished.try_recv() {
            self.received += 1;
            self.early.insert(id, f);
        }
        self.take_next()
    }

    /// The oldest batch, waiting for it; `None` when nothing is in flight.
    pub fn wait_finished(&mut self) -> Option<Finished<T>> {
        while self.in_flight() > 0 {
            if let Some(f) = self.take_next() {
                return Some(f);
            }
            match self.finished.recv() {
                Ok((id, f)) => {
                    self.received += 1;
                    self.early.insert(id, f);
                }
                Err(_) => {
                    // No lane left to finish the batches in flight: give them up.
                    self.next_out = self.next_id;
                    self.received = self.next_id;
                    return None;
                }
            }
        }
        None
    }

    fn take_next(&mut self) -> Option<Finished<T>> {
        let f = self.early.remove(&self.next_out)?;
        self.next_out += 1;
        Some(f)
    }
}

impl<T> Drop for LanePool<T> {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a caught panic says, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "no message".to_string(),
    }
}

fn analyze<T: Picture>(
    analyzer: &mut Analyzer,
    frames: &[(usize, T)],
    hints: &[Option<Arc<Hint>>],
    per_run: usize,
) -> Result<(Vec<Vec<FaceAnalysis>>, StageTimes), EngineError> {
    let (views, hints): (Vec<ImageView<'_>>, Vec<Option<&Hint>>) = frames
        .iter()
        .enumerate()
        .filter_map(|(i, (_, f))| Some((f.picture()?, hints.get(i).and_then(|h| h.as_deref()))))
        .unzip();
    let mut faces = Vec::with_capacity(views.len());
    let mut times = StageTimes::default();
    for (run, hints) in views.chunks(per_run.max(1)).zip(hints.chunks(per_run.max(1))) {
        let (f, t) = analyzer.analyze_hinted(run, hints)?;
        faces.extend(f);
        times.detect += t.detect;
        times.classify += t.classify;
        times.detected += t.detected;
        times.classified += t.classified;
    }
    Ok((faces, times))
}
