//! A decoded GStreamer sample as a [`Frame`]: no copy, planes found where the buffer says.

use std::time::{Instant, SystemTime};

use gstreamer as gst;
use gstreamer_video as gst_video;

use super::{Frame, PixelLayout};
use crate::image::YuvMatrix;

/// The YUV → RGB matrix a stream's colorimetry asks for (BT.601 when it says nothing
/// clefd knows, as for SD video).
fn yuv_matrix(info: &gst_video::VideoInfo) -> YuvMatrix {
    let c = info.colorimetry();
    let base = match c.matrix() {
        gst_video::VideoColorMatrix::Bt709 => YuvMatrix::BT709,
        gst_video::VideoColorMatrix::Bt2020 => YuvMatrix::BT2020,
        _ => YuvMatrix::BT601,
    };
    YuvMatrix { full_range: c.range() == gst_video::VideoColorRange::Range0_255, ..base }
}

/// Wraps a decoded sample as a [`Frame`] without copying it. The planes are where the
/// buffer's video meta says (elements that pad their rows, like NVIDIA's, attach one),
/// else where the caps put them.
pub(super) fn frame_from_sample(sample: &gst::Sample, index: u64) -> Option<Frame> {
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let buffer = sample.buffer_owned()?;
    let meta = buffer.meta::<gst_video::VideoMeta>();
    let (offsets, strides) = match &meta {
        Some(m) => (m.offset(), m.stride()),
        None => (info.offset(), info.stride()),
    };
    let offset = |i: usize| offsets.get(i).copied();
    let stride = |i: usize| strides.get(i).and_then(|&s| usize::try_from(s).ok());
    let layout = match info.format() {
        gst_video::VideoFormat::Rgb => PixelLayout::Rgb { stride: stride(0)? },
        gst_video::VideoFormat::I420 => PixelLayout::I420 {
            offsets: [offset(0)?, offset(1)?, offset(2)?],
            strides: [stride(0)?, stride(1)?, stride(2)?],
            matrix: yuv_matrix(&info),
        },
        _ => return None,
    };
    let buffer = buffer.into_mapped_buffer_readable().ok()?;
    Some(Frame {
        index,
        stream: 0,
        wall: SystemTime::now(),
        captured: Instant::now(),
        width: info.width() as usize,
        height: info.height() as usize,
        source_size: (info.width(), info.height()),
        layout,
        buffer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×2 I420 picture in a buffer whose rows are padded (strides 8, 8, 8) and whose
    /// planes do not start where the caps would put them: only the video meta says where.
    #[test]
    fn padded_frames_are_read_where_their_video_meta_says() {
        gst::init().unwrap();
        let (y, u, v) = ([16u8, 235, 16, 235, 235, 16, 235, 16], [128u8, 90], [128u8, 240]);
        let mut bytes = vec![0u8; 64];
        for row in 0..2 {
            bytes[row * 8..row * 8 + 4].copy_from_slice(&y[row * 4..row * 4 + 4]);
        }
        bytes[32..34].copy_from_slice(&u);
        bytes[48..50].copy_from_slice(&v);
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        gst_video::VideoMeta::add_full(
            buffer.get_mut().unwrap(),
            gst_video::VideoFrameFlags::empty(),
            gst_video::VideoFormat::I420,
            4,
            2,
            &[0, 32, 48],
            &[8, 8, 8],
        )
        .unwrap();
        let caps =
            gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 4, 2).build().unwrap().to_caps().unwrap();
        let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
        let frame = frame_from_sample(&sample, 0).expect("an I420 frame");
        let rgb = frame.view().expect("the planes fit").to_rgb();
        let expected = packed(&y, &u, &v);
        assert_eq!(rgb.data, expected.data, "the same picture as packed without padding");
    }

    /// The same picture packed the plain way, in RGB.
    fn packed(y: &[u8], u: &[u8], v: &[u8]) -> crate::image::RgbImage {
        let data: Vec<u8> = y.iter().chain(u).chain(v).copied().collect();
        crate::image::ImageView::i420(&data, 4, 2, [0, 8, 10], [4, 2, 2], YuvMatrix::BT601)
            .expect("packed planes fit")
            .to_rgb()
    }
}
