//! Cameras as GStreamer pipelines: decode, scale and convert to RGB inside GStreamer,
//! and hand each frame over, zero-copy, through an appsink that keeps only the newest.

mod camera;
mod supervisor;
mod uri;

pub use camera::{Camera, CameraOptions, DecoderChoice, Ended, SourceError, decode_image};
pub use supervisor::{CameraState, CameraStatus, Supervisor, SupervisorOptions};
pub use uri::{Capture, CaptureFormat, SourceSpec, with_password};

use std::time::{Instant, SystemTime};

use crate::image::RgbView;

/// One decoded RGB frame, still in GStreamer's buffer (no copy).
#[derive(Debug)]
pub struct Frame {
    /// Index within the camera's current stream.
    pub index: u64,
    /// Which start of the camera this frame belongs to (changes on every restart).
    pub stream: u32,
    /// Wall-clock capture (arrival) time.
    pub wall: SystemTime,
    /// Monotonic capture time, for latency.
    pub captured: Instant,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per row.
    pub stride: usize,
    buffer: gstreamer::MappedBuffer<gstreamer::buffer::Readable>,
}

impl Frame {
    /// The pixels.
    pub fn view(&self) -> Option<RgbView<'_>> {
        RgbView::new(self.buffer.as_slice(), self.width, self.height, self.stride)
    }
}
