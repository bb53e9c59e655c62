//! When a frame was captured and at what size the camera sent it: what an event's `ts` and
//! `frame_size` report. A frame reaches the appsink long after it left the camera (an RTSP
//! jitter buffer alone holds it for `rtsp_latency_ms`), and at the working width, not the
//! stream's; both are read from GStreamer instead of from the moment the frame arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::Frame;

/// The element the stream enters the scaler through (`nvvidconv` on a Jetson, else
/// `videoscale`), by name in the camera's pipeline.
pub(super) const SCALER_NAME: &str = "scale";

/// Seconds from 1900 (NTP's epoch) to 1970 (Unix's).
const NTP_TO_UNIX_S: u64 = 2_208_988_800;

/// A sender clock further than this from ours is ignored (a camera with its clock unset
/// would otherwise date its frames in 1970 or next week).
const MAX_SENDER_SKEW: Duration = Duration::from_secs(30);

/// Stamps each frame of one camera with its capture time and the stream's own size.
pub(super) struct Stamper {
    live: bool,
    /// The stream's size before scaling, as `width << 32 | height` (0 until known).
    source_size: Arc<AtomicU64>,
}

impl Stamper {
    /// Watches the caps entering the pipeline's scaler. `live`: the source's buffers carry
    /// capture running times (cameras), not positions in a file.
    pub(super) fn new(pipeline: &gst::Pipeline, live: bool) -> Stamper {
        let source_size = Arc::new(AtomicU64::new(0));
        if let Some(pad) = pipeline.by_name(SCALER_NAME).and_then(|e| e.static_pad("sink")) {
            let size = source_size.clone();
            pad.connect_notify(Some("caps"), move |pad, _| {
                let caps = pad.current_caps();
                let s = caps.as_ref().and_then(|c| c.structure(0));
                let dim = |k: &str| s.and_then(|s| s.get::<i32>(k).ok()).and_then(|v| u32::try_from(v).ok());
                if let (Some(w), Some(h)) = (dim("width"), dim("height")) {
                    size.store(u64::from(w) << 32 | u64::from(h), Ordering::Relaxed);
                }
            });
        }
        Stamper { live, source_size }
    }

    /// Moves `frame`'s arrival time (wall clock and monotonic, set when it was wrapped) back
    /// to its capture, and sets the stream's size once the scaler's caps are known.
    pub(super) fn stamp(&self, sink: &gst_app::AppSink, sample: &gst::Sample, frame: &mut Frame) {
        let size = self.source_size.load(Ordering::Relaxed);
        if size >> 32 != 0 && size as u32 != 0 {
            frame.source_size = ((size >> 32) as u32, size as u32);
        }
        let (wall, now) = (frame.wall, frame.captured);
        let age = sample
            .buffer()
            .and_then(|b| sender_age(b, wall).or_else(|| if self.live { pipeline_age(sink, sample, b) } else { None }));
        if let Some(age) = age {
            frame.wall = wall.checked_sub(age).unwrap_or(wall);
            frame.captured = now.checked_sub(age).unwrap_or(now);
        }
    }
}

/// How long ago the camera's own clock says the frame was taken: an NTP reference
/// timestamp (from RTCP sender reports, which `rtspsrc` attaches from GStreamer 1.22 on).
fn sender_age(buffer: &gst::BufferRef, now: SystemTime) -> Option<Duration> {
    let ntp = buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| m.reference().structure(0).is_some_and(|s| s.name() == "timestamp/x-ntp"))?
        .timestamp();
    let unix = Duration::from_nanos(ntp.nseconds()).checked_sub(Duration::from_secs(NTP_TO_UNIX_S))?;
    let taken = SystemTime::UNIX_EPOCH + unix;
    capture_age(now, taken)
}

/// How long ago a live source produced the buffer: the pipeline clock now, less the clock
/// time of the buffer's running time (its capture or arrival at the source element).
fn pipeline_age(sink: &gst_app::AppSink, sample: &gst::Sample, buffer: &gst::BufferRef) -> Option<Duration> {
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let running = segment.to_running_time(buffer.pts()?)?;
    let (clock, base) = (sink.clock()?, sink.base_time()?);
    let age = clock.time()?.checked_sub(base + running)?;
    Some(Duration::from_nanos(age.nseconds()).min(MAX_SENDER_SKEW))
}

/// `now − taken`, when `taken` is plausible (not in the future, not older than the skew
/// allowed).
fn capture_age(now: SystemTime, taken: SystemTime) -> Option<Duration> {
    now.duration_since(taken).ok().filter(|age| *age <= MAX_SENDER_SKEW)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed "now", so the arithmetic is exact.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_600_000)
    }

    #[test]
    fn a_sender_clock_far_from_ours_is_ignored() {
        let now = now();
        assert_eq!(capture_age(now, now - Duration::from_millis(250)), Some(Duration::from_millis(250)));
        assert_eq!(capture_age(now, now + Duration::from_secs(1)), None, "from the future");
        assert_eq!(capture_age(now, now - Duration::from_secs(3600)), None, "an hour off");
    }

    #[test]
    fn an_ntp_reference_timestamp_dates_the_frame() {
        gst::init().unwrap();
        let now = now();
        let since_unix = now.duration_since(SystemTime::UNIX_EPOCH).unwrap() - Duration::from_millis(400);
        let ntp = since_unix + Duration::from_secs(NTP_TO_UNIX_S);
        let mut buffer = gst::Buffer::new();
        let caps = gst::Caps::new_empty_simple("timestamp/x-ntp");
        gst::ReferenceTimestampMeta::add(
            buffer.get_mut().unwrap(),
            &caps,
            gst::ClockTime::from_nseconds(ntp.as_nanos() as u64),
            None,
        );
        assert_eq!(sender_age(&buffer, now), Some(Duration::from_millis(400)));
        assert_eq!(sender_age(&gst::Buffer::new(), now), None, "no meta: no sender time");
    }

    /// A live frame held back by a queue until 12 more have been captured (as a jitter
    /// buffer or a busy decoder would hold it) is dated before its source even made the
    /// next frame, not when it was delivered. Ordered by events, not measured in time.
    #[test]
    fn a_live_frame_is_dated_when_its_source_made_it() {
        gst::init().unwrap();
        let desc = "videotestsrc name=src is-live=true num-buffers=30 ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 \
                    ! queue min-threshold-buffers=13 ! videoscale name=scale ! appsink name=sink sync=false";
        let pipeline = gst::parse::launch(desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
        // When each buffer left the source, in order.
        let left = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = left.clone();
        let src_pad = pipeline.by_name("src").and_then(|e| e.static_pad("src")).unwrap();
        src_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            record.lock().unwrap().push(SystemTime::now());
            gst::PadProbeReturn::Ok
        });
        let stamper = Stamper::new(&pipeline, true);
        pipeline.set_state(gst::State::Playing).unwrap();
        let sample = sink.pull_sample().expect("a frame");
        let mut frame = super::super::frame::frame_from_sample(&sample, 0).expect("an I420 frame");
        stamper.stamp(&sink, &sample, &mut frame);
        let left = left.lock().unwrap().clone();
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(left.len() >= 13, "the queue held the first frame until 13 were captured: {}", left.len());
        assert!(frame.wall < left[1], "the first frame is dated before the second left the source");
        assert_eq!(frame.source_size, (64, 48));

        // Not live (a file): dated on arrival.
        let before = SystemTime::now();
        let mut fresh = super::super::frame::frame_from_sample(&sample, 0).expect("an I420 frame");
        Stamper { live: false, source_size: Arc::new(AtomicU64::new(0)) }.stamp(&sink, &sample, &mut fresh);
        assert!(fresh.wall >= before, "a file's frame is dated when it arrives");
    }
}
