//! Cameras as GStreamer pipelines: decode and scale inside GStreamer (to I420, which the
//! models' inputs are sampled from), and hand each frame over, zero-copy, through an
//! appsink that keeps only the newest.

mod camera;
mod capture;
mod damage;
mod decoder;
mod diagnose;
mod frame;
mod grab;
mod network;
mod stamp;
mod supervisor;
mod truncated;

pub use crate::config::uri::{Capture, CaptureFormat, SourceSpec, with_password};
pub use camera::{Camera, CameraOptions, Ended, SourceError};
pub use decoder::{DecoderChoice, JpegDecoder, csi_source, installed_jpeg_decoders, mjpeg_decoder, planned_decoder};
pub use grab::{decode_image, decode_video_frames};
pub use supervisor::{CameraState, CameraStatus, HEALTH_WINDOW, Supervisor, SupervisorOptions};

use std::time::{Instant, SystemTime};

use crate::image::{ImageView, YuvMatrix};

/// How a frame's bytes are laid out in its buffer.
#[derive(Debug, Clone, Copy)]
pub enum PixelLayout {
    /// Packed RGB with rows of `stride` bytes.
    Rgb {
        /// Bytes per row.
        stride: usize,
    },
    /// Planar I420: where each plane starts and its bytes per row, and the colour matrix.
    I420 {
        /// Plane offsets (Y, U, V).
        offsets: [usize; 3],
        /// Plane strides (Y, U, V).
        strides: [usize; 3],
        /// YUV → RGB conversion from the caps' colorimetry.
        matrix: YuvMatrix,
    },
}

/// One decoded frame, still in GStreamer's buffer (no copy, no colour conversion: the
/// models' inputs are sampled from the decoder's I420 planes).
#[derive(Debug)]
pub struct Frame {
    /// Index within the camera's current stream.
    pub index: u64,
    /// Which start of the camera this frame belongs to (changes on every restart).
    pub stream: u32,
    /// Wall-clock capture time: the camera's own (RTCP sender reports) where it sends it,
    /// else when the frame reached the source element (live sources), else when it was
    /// decoded (files).
    pub wall: SystemTime,
    /// Monotonic capture time, for latency.
    pub captured: Instant,
    /// Width in pixels (after scaling to the working width).
    pub width: usize,
    /// Height in pixels (after scaling).
    pub height: usize,
    /// The stream's size as the camera sends it, before scaling.
    pub source_size: (u32, u32),
    /// Where the bytes are.
    pub layout: PixelLayout,
    buffer: gstreamer::MappedBuffer<gstreamer::buffer::Readable>,
}

impl Frame {
    /// The pixels.
    pub fn view(&self) -> Option<ImageView<'_>> {
        let data = self.buffer.as_slice();
        match self.layout {
            PixelLayout::Rgb { stride } => ImageView::new(data, self.width, self.height, stride),
            PixelLayout::I420 { offsets, strides, matrix } => {
                ImageView::i420(data, self.width, self.height, offsets, strides, matrix)
            }
        }
    }
}
