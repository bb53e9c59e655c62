//! One camera's GStreamer pipeline and the thread that watches its bus.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::capture::capture_chain;
use super::decoder::{
    DecoderChoice, after_decoder, csi_source, decode_chain, from_device_memory, mjpeg_chain, rank_lean_h264_decoder,
    steer_decoders, watch_decoder,
};
use super::diagnose::{advice, error_reason, fail_without_video};
use super::frame::frame_from_sample;
use super::network;
use super::stamp::{SCALER_NAME, Stamper};
use super::{Frame, SourceSpec};
use crate::jetson::VideoPlatform;

/// Why a camera could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// GStreamer itself failed to initialise.
    #[error("GStreamer failed to initialise: {0}")]
    Init(String),
    /// A GStreamer element this source needs is not installed.
    #[error("camera '{camera}': GStreamer element '{element}' is not installed ({hint})")]
    MissingElement {
        /// Camera name.
        camera: String,
        /// Element factory name.
        element: String,
        /// What to install.
        hint: String,
    },
    /// The pipeline could not be built or started.
    #[error("camera '{camera}': {reason}")]
    Pipeline {
        /// Camera name.
        camera: String,
        /// GStreamer's message.
        reason: String,
    },
    /// A picture or clip file (not a camera) could not be decoded.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// How one camera should run.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraOptions {
    /// Camera name, for logs and errors.
    pub name: String,
    /// What to open.
    pub spec: SourceSpec,
    /// Working width: wider frames are scaled down to it (height follows the aspect
    /// ratio), narrower ones are kept.
    pub width: u32,
    /// `file://`: start over at the end.
    pub looping: bool,
    /// `file://`: pace at the stream's rate.
    pub realtime: bool,
    /// Frames per second to keep at most (the rest are dropped before conversion).
    pub fps_cap: Option<f64>,
    /// `rtsp://`: use UDP instead of TCP.
    pub rtsp_udp: bool,
    /// `rtsp://`: jitter-buffer latency in milliseconds.
    pub rtsp_latency_ms: u32,
    /// Threads of a software video decoder (0: its default, one per core).
    pub decoder_threads: u32,
    /// Which decoders the camera may get (`software`: the CPU's only).
    pub decoder: DecoderChoice,
}

/// How a camera's stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// End of stream (a file without `loop`).
    Eos,
    /// A GStreamer error (corrupt file, unreachable server, ...).
    Error(String),
    /// Stopped on request.
    Stopped,
}

/// A running camera. Dropping it stops the pipeline.
pub struct Camera {
    name: String,
    spec: SourceSpec,
    /// The `gst-launch` description the pipeline was built from (no credentials: the
    /// source's location is set as a property).
    description: String,
    pipeline: gst::Pipeline,
    stop: Arc<AtomicBool>,
    bus_thread: Option<std::thread::JoinHandle<()>>,
    frames: Arc<AtomicU64>,
    /// The video decoder in use: the Jetson chain's, or the one `decodebin` picked once it has.
    decoder: Arc<Mutex<Option<String>>>,
    /// Buffers into and out of the `fps` cap (videorate), counted by pad probes.
    rate: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>,
}

pub(super) fn init() -> Result<(), SourceError> {
    gst::init().map_err(|e| SourceError::Init(e.to_string()))?;
    rank_lean_h264_decoder();
    Ok(())
}

fn require(camera: &str, element: &str, hint: &str) -> Result<(), SourceError> {
    if gst::ElementFactory::find(element).is_none() {
        return Err(SourceError::MissingElement { camera: camera.into(), element: element.into(), hint: hint.into() });
    }
    Ok(())
}

/// The GStreamer description up to (not including) scaling, with the source named `src`.
fn source_description(opts: &CameraOptions) -> Result<String, SourceError> {
    let name = opts.name.as_str();
    Ok(match &opts.spec {
        SourceSpec::File { .. } => {
            require(name, "decodebin", "install gstreamer1.0-plugins-base")?;
            format!("filesrc name=src ! {}", decode_chain(opts.width, opts.decoder))
        }
        SourceSpec::Test { .. } => {
            require(name, "videotestsrc", "install gstreamer1.0-plugins-base")?;
            "videotestsrc name=src is-live=true ! video/x-raw,width=640,height=480,framerate=30/1".into()
        }
        SourceSpec::Rtsp { .. } => {
            require(name, "rtspsrc", "install gstreamer1.0-plugins-good")?;
            format!(
                "rtspsrc name=src protocols={} latency={} ! {}",
                if opts.rtsp_udp { "udp" } else { "tcp" },
                opts.rtsp_latency_ms,
                decode_chain(opts.width, opts.decoder)
            )
        }
        SourceSpec::V4l2 { capture, .. } => {
            require(name, "v4l2src", "install gstreamer1.0-plugins-good")?;
            format!("v4l2src name=src ! {}{}", capture_chain(capture), after_decoder(opts.width, opts.decoder))
        }
        SourceSpec::Csi { sensor, capture } => {
            let has = |element: &str| gst::ElementFactory::find(element).is_some();
            let source = csi_source(VideoPlatform::current(), &has).map_err(|hint| SourceError::MissingElement {
                camera: name.into(),
                element: "nvarguscamerasrc".into(),
                hint: hint.into(),
            })?;
            let mode = if capture.is_empty() {
                String::new()
            } else {
                format!(" ! video/x-raw(memory:NVMM){}", capture.fields())
            };
            format!("{source} name=src sensor-id={sensor}{mode}{}", from_device_memory(opts.width))
        }
        SourceSpec::HttpMjpeg { .. } => {
            require(name, "souphttpsrc", "install gstreamer1.0-plugins-good")?;
            format!("souphttpsrc name=src is-live=true ! multipartdemux ! {}", mjpeg_chain(opts.width, opts.decoder))
        }
    })
}

fn configure_source(src: &gst::Element, spec: &SourceSpec) {
    match spec {
        SourceSpec::File { path } => src.set_property("location", path.display().to_string()),
        SourceSpec::Test { pattern } => src.set_property_from_str("pattern", pattern),
        SourceSpec::Rtsp { location } => {
            network::point_at(src, location);
            network::only_video_streams(src);
            // The camera's own capture time, from its RTCP sender reports (GStreamer 1.22+).
            if src.find_property("add-reference-timestamp-meta").is_some() {
                src.set_property("add-reference-timestamp-meta", true);
            }
        }
        SourceSpec::HttpMjpeg { location } => network::point_at(src, location),
        SourceSpec::V4l2 { device, .. } => src.set_property("device", device.display().to_string()),
        SourceSpec::Csi { .. } => {}
    }
}

impl Camera {
    /// Builds and starts the pipeline. Every frame goes to `on_frame`; `on_end` is called
    /// once, from the bus thread, when the stream ends for good.
    pub fn start(
        opts: CameraOptions,
        on_frame: impl Fn(Frame) + Send + Sync + 'static,
        on_end: impl FnOnce(Ended) + Send + 'static,
    ) -> Result<Camera, SourceError> {
        init()?;
        let perr = |reason: String| SourceError::Pipeline { camera: opts.name.clone(), reason };
        let live = !matches!(opts.spec, SourceSpec::File { .. });
        let desc = pipeline_description(&opts, live)?;
        tracing::debug!(camera = %opts.name, pipeline = %desc, "building the camera's pipeline");
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| perr(format!("cannot build pipeline: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| perr("not a pipeline".into()))?;
        let decoder = watch_decoder(&pipeline, &opts.name, opts.decoder_threads);
        steer_decoders(&pipeline, opts.decoder);
        fail_without_video(&pipeline);
        // A file is judged whole or damaged at its end from what its decoder saw.
        let damage = match &opts.spec {
            SourceSpec::File { path } => Some(super::damage::Watch::attach(&pipeline, path)),
            _ => None,
        };
        let src = pipeline.by_name("src").ok_or_else(|| perr("no source element".into()))?;
        configure_source(&src, &opts.spec);
        let sink = pipeline
            .by_name("sink")
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| perr("no appsink".into()))?;
        let frames = Arc::new(AtomicU64::new(0));
        deliver_frames(&sink, Stamper::new(&pipeline, live), frames.clone(), opts.name.clone(), on_frame);
        play(&pipeline, &opts.spec).map_err(perr)?;
        let stop = Arc::new(AtomicBool::new(false));
        let bus_thread = {
            let (looping, stop) = (opts.looping && !live, stop.clone());
            spawn_bus_thread(&pipeline, &opts, (looping, damage), stop, on_end).map_err(perr)?
        };
        tracing::info!(camera = %opts.name, source = %describe(&opts.spec), width = opts.width, "camera started");
        let rate = count_rate_drops(&pipeline);
        Ok(Camera {
            name: opts.name,
            spec: opts.spec,
            description: desc,
            pipeline,
            stop,
            bus_thread: Some(bus_thread),
            frames,
            decoder,
            rate,
        })
    }

    /// What this camera reads.
    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// Frames the `fps` cap dropped so far (before conversion, so they cost little).
    pub fn fps_cap_drops(&self) -> u64 {
        self.rate
            .as_ref()
            .map_or(0, |(into, out)| into.load(Ordering::Relaxed).saturating_sub(out.load(Ordering::Relaxed)))
    }

    /// Frames the source delivered into the `fps` cap so far (`None` without a cap).
    pub fn frames_into_cap(&self) -> Option<u64> {
        self.rate.as_ref().map(|(into, _)| into.load(Ordering::Relaxed))
    }

    /// The frame rate the source negotiated before the `fps` cap, when it states one
    /// (`None` without a cap, or for a variable or unknown rate).
    pub fn native_fps(&self) -> Option<f64> {
        let caps = self.pipeline.by_name("rate")?.static_pad("sink")?.current_caps()?;
        let rate = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
        (rate.numer() > 0 && rate.denom() > 0).then(|| f64::from(rate.numer()) / f64::from(rate.denom()))
    }

    /// The pipeline, as a `gst-launch-1.0` description (for logs and for checking which
    /// elements a platform gets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The video decoder in use (`None` before the stream's caps are known, or for
    /// sources that need none).
    pub fn decoder(&self) -> Option<String> {
        self.decoder.lock().ok().and_then(|d| d.clone())
    }

    /// Frames delivered so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Stops the pipeline and waits for its bus thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.bus_thread.take() {
            let _ = t.join();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        tracing::debug!(camera = %self.name, "camera stopped");
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Where a source reads from, without credentials.
fn describe(spec: &SourceSpec) -> String {
    match spec {
        SourceSpec::Rtsp { location } | SourceSpec::HttpMjpeg { location } => match url::Url::parse(location) {
            Ok(mut u) => {
                let _ = u.set_password(None);
                let _ = u.set_username("");
                u.to_string()
            }
            Err(_) => "(unparsable uri)".into(),
        },
        SourceSpec::File { path } => path.display().to_string(),
        SourceSpec::Test { pattern } => format!("test pattern {pattern}"),
        SourceSpec::V4l2 { device, .. } => device.display().to_string(),
        SourceSpec::Csi { sensor, .. } => format!("CSI sensor {sensor}"),
    }
}

fn watch_bus(
    bus: &gst::Bus,
    pipeline: &gst::Pipeline,
    (name, spec): (&str, &SourceSpec),
    (looping, damage): (bool, Option<&super::damage::Watch>),
    stop: &AtomicBool,
) -> Ended {
    use gst::MessageView;
    let mut warning = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            MessageView::Eos(_) if looping => {
                tracing::debug!(camera = %name, "end of file; looping");
                if pipeline.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO).is_err()
                {
                    return Ended::Error("cannot seek back to the start to loop".into());
                }
            }
            MessageView::Eos(_) => {
                tracing::info!(camera = %name, "end of stream");
                // A file that stopped at damage ends like a whole one: tell them apart.
                return match damage.and_then(|d| d.verdict(pipeline, warning.as_deref())) {
                    Some(reason) => Ended::Error(reason),
                    None => Ended::Eos,
                };
            }
            MessageView::Error(e) => {
                let reason = error_reason(e, spec);
                tracing::debug!(camera = %name, error = %reason, debug = ?e.debug(), "camera pipeline error");
                return Ended::Error(reason);
            }
            MessageView::Warning(w) => {
                tracing::warn!(camera = %name, warning = %w.error(), "GStreamer warning");
                warning = Some(w.error().to_string());
            }
            _ => {}
        }
    }
    Ended::Stopped
}

/// The camera's pipeline in `gst-launch` syntax: source and decoder, the fps cap, a small
/// queue, the scaler to the working width, I420, and the appsink.
fn pipeline_description(opts: &CameraOptions, live: bool) -> Result<String, SourceError> {
    let sync = !live && opts.realtime;
    let rate = match opts.fps_cap {
        Some(fps) => format!(" ! videorate name=rate drop-only=true max-rate={}", fps.ceil().max(1.0) as u32),
        None => String::new(),
    };
    let source = source_description(opts)?;
    // The stream's own size is read where it enters the first scaler (see `stamp`).
    let scaler =
        if source.contains(&format!("name={SCALER_NAME}")) { String::new() } else { format!(" name={SCALER_NAME}") };
    Ok(format!(
        "{source}{rate} ! queue max-size-buffers=2 leaky={} ! videoscale{scaler} ! videoconvert ! video/x-raw,format=I420,width=[16,{}],pixel-aspect-ratio=1/1 ! appsink name=sink max-buffers=1 drop=true sync={}",
        // A file must not leak: paced, the decoder runs ahead and the sink's clock would
        // see only the last frames; unpaced, the consumer paces the decoder, and a leaky
        // queue would let it decode frames only to throw them away. Live sources drop
        // the oldest frame.
        if live { "downstream" } else { "no" },
        opts.width,
        sync
    ))
}

/// Hands every sample the appsink pulls to `on_frame`, numbered and stamped.
fn deliver_frames(
    sink: &gst_app::AppSink,
    stamper: Stamper,
    counter: Arc<AtomicU64>,
    camera: String,
    on_frame: impl Fn(Frame) + Send + Sync + 'static,
) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                match frame_from_sample(&sample, counter.fetch_add(1, Ordering::Relaxed)) {
                    Some(mut frame) => {
                        stamper.stamp(sink, &sample, &mut frame);
                        on_frame(frame)
                    }
                    None => tracing::warn!(camera = %camera, "dropped a frame that is neither I420 nor RGB"),
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Sets the pipeline playing; on failure, why, in the words of the element that refused
/// and with advice for the kind of source.
fn play(pipeline: &gst::Pipeline, spec: &SourceSpec) -> Result<(), String> {
    if pipeline.set_state(gst::State::Playing).is_ok() {
        return Ok(());
    }
    let said = pipeline.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error])).and_then(|m| match m.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    });
    let _ = pipeline.set_state(gst::State::Null);
    let mut reason = format!("cannot start {}", describe(spec));
    if let Some(said) = said {
        reason += &format!(": {said}");
    }
    if let Some(advice) = advice(spec) {
        reason += &format!(" — {advice}");
    }
    Err(reason)
}

/// The camera's bus thread: it watches for the end of the stream or an error (looping a
/// file), stops the pipeline and tells `on_end` how it ended.
fn spawn_bus_thread(
    pipeline: &gst::Pipeline,
    opts: &CameraOptions,
    (looping, damage): (bool, Option<Arc<super::damage::Watch>>),
    stop: Arc<AtomicBool>,
    on_end: impl FnOnce(Ended) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    let bus = pipeline.bus().ok_or_else(|| "pipeline has no bus".to_string())?;
    let (pipeline, name, spec) = (pipeline.clone(), opts.name.clone(), opts.spec.clone());
    std::thread::Builder::new()
        .name(format!("cam-{name}"))
        .spawn(move || {
            let ended = watch_bus(&bus, &pipeline, (&name, &spec), (looping, damage.as_deref()), &stop);
            let _ = pipeline.set_state(gst::State::Null);
            on_end(ended);
        })
        .map_err(|e| format!("cannot spawn the bus thread: {e}"))
}

/// Buffers into and out of the fps cap's `videorate`, when there is one: their difference
/// is what the cap dropped.
fn count_rate_drops(pipeline: &gst::Pipeline) -> Option<(Arc<AtomicU64>, Arc<AtomicU64>)> {
    let rate = pipeline.by_name("rate")?;
    let counters = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for (pad, counter) in [("sink", counters.0.clone()), ("src", counters.1.clone())] {
        if let Some(pad) = rate.static_pad(pad) {
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
    }
    Some(counters)
}
