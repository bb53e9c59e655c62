//! Keeps one camera running for months: restarts it with capped exponential backoff and
//! jitter when it fails, tears it down when it is connected but silent for
//! `stall_timeout`, and reports every state change. A file that ends or is corrupt is
//! not retried (a file does not heal); network and device sources always are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::{Camera, CameraOptions, Ended, Frame, SourceError, SourceSpec};
use crate::backoff::Backoff;

/// A camera's state, as published on `{prefix}/{device}/{camera}/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Building the pipeline / connecting.
    Starting,
    /// Frames are arriving.
    Streaming,
    /// The stream failed; waiting to retry.
    Reconnecting,
    /// Connected but silent for `stall_timeout`; being restarted.
    Stalled,
    /// Will not be retried (missing element, corrupt or finished file).
    Failed,
    /// Turned off in the config.
    Disabled,
    /// A file (without `loop`) played to its end: nothing more comes from it.
    Ended,
}

impl CameraState {
    /// The name used in topics, metrics and health reports.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Streaming => "streaming",
            CameraState::Reconnecting => "reconnecting",
            CameraState::Stalled => "stalled",
            CameraState::Failed => "failed",
            CameraState::Disabled => "disabled",
            CameraState::Ended => "ended",
        }
    }
}

/// One state report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraStatus {
    /// Camera name (not in the JSON: it is in the topic).
    #[serde(skip)]
    pub camera: String,
    /// Current state.
    pub status: CameraState,
    /// Frames per second delivered over the last few seconds.
    pub fps: f64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When this state began (RFC 3339).
    pub since: String,
    /// Restarts so far.
    pub restarts: u64,
    /// Frames dropped by the camera's `fps` cap so far.
    pub dropped_fps_cap: u64,
    /// The video decoder GStreamer chose for the stream (`nvv4l2decoder`, `avdec_h264`,
    /// `openh264dec`, ...), once known; absent for sources that need none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    /// The frame rate health expects of the camera, when it expects one: its `fps` cap
    /// (a maximum), lowered to the source's own rate where that is known; none for a file
    /// played unpaced (see [`crate::service::probe::fps_target`]; not in the JSON).
    #[serde(skip)]
    pub target_fps: Option<f64>,
    /// The delivered rate over the last whole health window (at least
    /// [`HEALTH_WINDOW`], long enough not to flap at 1-2 fps); `None` until one has passed.
    #[serde(skip)]
    pub health_fps: Option<f64>,
}

/// The span health judges a camera's rate over.
pub const HEALTH_WINDOW: Duration = Duration::from_secs(10);

/// Restart policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorOptions {
    /// The camera.
    pub camera: CameraOptions,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Silence after which a connected stream is restarted.
    pub stall_timeout: Duration,
}

type FrameFn = Arc<dyn Fn(Frame) + Send + Sync>;
type StatusFn = Arc<dyn Fn(&CameraStatus) + Send + Sync>;

/// A supervised camera. Dropping it (or [`Supervisor::stop`]) stops the camera.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Reporter {
    camera: String,
    on_status: StatusFn,
    state: Option<CameraState>,
    since: SystemTime,
    restarts: u64,
    capped_before: u64,
    capped_now: u64,
    decoder: Option<String>,
    /// The `fps` cap, and whether the source is paced (not a file played unpaced).
    cap: (Option<f64>, bool),
    /// The source's own rate: negotiated (caps) and measured into the cap, when known.
    native: (Option<f64>, Option<f64>),
    health_fps: Option<f64>,
}

impl Reporter {
    fn report(&mut self, state: CameraState, fps: f64, error: Option<String>) {
        if self.state != Some(state) {
            self.since = SystemTime::now();
            self.state = Some(state);
            match (&error, state) {
                (Some(e), _) => {
                    tracing::warn!(camera = %self.camera, state = ?state, error = %e, "camera state")
                }
                (None, _) => tracing::info!(camera = %self.camera, state = ?state, "camera state"),
            }
        }
        let status = CameraStatus {
            camera: self.camera.clone(),
            status: state,
            fps,
            last_error: error,
            since: crate::events::rfc3339(self.since),
            restarts: self.restarts,
            dropped_fps_cap: self.capped_before + self.capped_now,
            decoder: self.decoder.clone(),
            target_fps: crate::service::probe::fps_target(self.cap.0, self.native.0, self.native.1, self.cap.1),
            health_fps: self.health_fps,
        };
        (self.on_status)(&status);
    }
}

impl Supervisor {
    /// Starts supervising. Frames go to `on_frame` (stamped with the stream generation);
    /// states to `on_status`; `on_done` runs once when the camera is finished for good
    /// (file ended, permanent failure, or stop).
    pub fn spawn(
        opts: SupervisorOptions,
        on_frame: FrameFn,
        on_status: StatusFn,
        on_done: Box<dyn FnOnce() + Send>,
    ) -> Supervisor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = opts.camera.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sup-{name}"))
            .spawn(move || {
                supervise(&opts, &on_frame, on_status, &flag);
                on_done();
            })
            .ok();
        if thread.is_none() {
            tracing::error!(camera = %name, "cannot spawn the supervisor thread");
        }
        Supervisor { stop, thread }
    }

    /// Asks the camera to stop without waiting for it: many cameras then wind down at
    /// once, and [`Supervisor::stop`] only collects them (128 cameras stop in about the
    /// time of one instead of one after the other).
    pub fn ask_to_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops the camera and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps up to `d`, waking early when stopped; returns false if stopped.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    !stop.load(Ordering::SeqCst)
}

fn supervise(opts: &SupervisorOptions, on_frame: &FrameFn, on_status: StatusFn, stop: &AtomicBool) {
    let is_file = matches!(opts.camera.spec, SourceSpec::File { .. });
    let mut rep = Reporter {
        camera: opts.camera.name.clone(),
        on_status,
        state: None,
        since: SystemTime::now(),
        restarts: 0,
        capped_before: 0,
        capped_now: 0,
        decoder: None,
        cap: (opts.camera.fps_cap, !is_file || opts.camera.realtime),
        native: (None, None),
        health_fps: None,
    };
    let salt = opts.camera.name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max, salt);
    let mut generation: u32 = 0;
    rep.report(CameraState::Starting, 0.0, None);
    while !stop.load(Ordering::SeqCst) {
        generation = generation.wrapping_add(1);
        let (end_tx, end_rx) = mpsc::channel();
        let cb = on_frame.clone();
        let g = generation;
        let started = Camera::start(
            opts.camera.clone(),
            move |mut f| {
                f.stream = g;
                cb(f)
            },
            move |e| {
                let _ = end_tx.send(e);
            },
        );
        let camera = match started {
            Ok(c) => c,
            Err(e @ (SourceError::MissingElement { .. } | SourceError::Init(_))) => {
                rep.report(CameraState::Failed, 0.0, Some(e.to_string()));
                return;
            }
            Err(e) => {
                rep.report(CameraState::Reconnecting, 0.0, Some(e.to_string()));
                rep.restarts += 1;
                if !pause(backoff.next_delay(), stop) {
                    return;
                }
                continue;
            }
        };
        let outcome = watch(&camera, &end_rx, opts.stall_timeout, &mut rep, stop, &mut backoff);
        camera.stop();
        rep.capped_before += std::mem::take(&mut rep.capped_now);
        match outcome {
            Watch::Stopped => return,
            Watch::Finished => {
                // Not `streaming` with a frozen fps: the file is over.
                rep.report(CameraState::Ended, 0.0, None);
                return;
            }
            Watch::Failed(reason) if is_file => {
                rep.report(CameraState::Failed, 0.0, Some(reason));
                return;
            }
            Watch::Failed(reason) => rep.report(CameraState::Reconnecting, 0.0, Some(reason)),
            Watch::Stalled(reason) => rep.report(CameraState::Stalled, 0.0, Some(reason)),
        }
        rep.restarts += 1;
        if !pause(backoff.next_delay(), stop) {
            return;
        }
    }
}

enum Watch {
    Stopped,
    Finished,
    Failed(String),
    Stalled(String),
}

fn watch(
    camera: &Camera,
    ended: &mpsc::Receiver<Ended>,
    stall_timeout: Duration,
    rep: &mut Reporter,
    stop: &AtomicBool,
    backoff: &mut Backoff,
) -> Watch {
    let is_file = matches!(camera.spec(), SourceSpec::File { .. });
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    let mut window = (Instant::now(), 0u64);
    let mut health = (Instant::now(), 0u64, camera.frames_into_cap());
    let mut fps = 0.0;
    let mut last_report = Instant::now();
    loop {
        match ended.recv_timeout(Duration::from_millis(200)) {
            Ok(Ended::Eos) if is_file && camera.frames() == 0 => {
                let decoder = camera.decoder().unwrap_or_else(|| "none".into());
                return Watch::Failed(format!(
                    "the file ended without a single decoded frame (decoder: {decoder}): is it a video clefd can \
                     decode? try decoder = \"libav\""
                ));
            }
            Ok(Ended::Eos) if is_file => return Watch::Finished,
            Ok(Ended::Eos) => {
                return Watch::Failed("the stream ended (end of stream from the source)".into());
            }
            Ok(Ended::Error(reason)) => return Watch::Failed(reason),
            Ok(Ended::Stopped) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Watch::Stopped;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if stop.load(Ordering::SeqCst) {
            return Watch::Stopped;
        }
        let now = Instant::now();
        let n = camera.frames();
        rep.capped_now = camera.fps_cap_drops();
        rep.decoder = camera.decoder().or(rep.decoder.take());
        if n > last_count {
            last_count = n;
            last_progress = now;
            if rep.state != Some(CameraState::Streaming) {
                backoff.reset();
                rep.report(CameraState::Streaming, 0.0, None);
                // The rate is measured over streaming time only, not the connection's.
                window = (now, n);
                health = (now, n, camera.frames_into_cap());
                rep.health_fps = None;
                last_report = now;
            }
        } else if now - last_progress > stall_timeout {
            return Watch::Stalled(format!("no frame for {:.1} s", stall_timeout.as_secs_f64()));
        }
        if now - health.0 >= HEALTH_WINDOW && rep.state == Some(CameraState::Streaming) {
            let secs = (now - health.0).as_secs_f64();
            let into = camera.frames_into_cap();
            rep.health_fps = Some((n - health.1) as f64 / secs);
            rep.native = (camera.native_fps(), into.zip(health.2).map(|(a, b)| a.saturating_sub(b) as f64 / secs));
            health = (now, n, into);
        }
        if now - window.0 >= Duration::from_secs(2) {
            fps = (n - window.1) as f64 / (now - window.0).as_secs_f64();
            window = (now, n);
        }
        if rep.state == Some(CameraState::Streaming) && now - last_report >= Duration::from_secs(2) {
            last_report = now;
            rep.report(CameraState::Streaming, (fps * 10.0).round() / 10.0, None);
        }
    }
}
