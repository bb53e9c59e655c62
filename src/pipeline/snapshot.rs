//! Snapshots (`[snapshots]`): a small JPEG of a face, taken when its track begins, for a
//! dashboard or a log of who was seen. Made on the worker's thread only for `new` events
//! (rare), from the frame the event came from; where it goes is the caller's business.

use crate::image::{ImageView, Rect};

/// A face's picture from the frame its track began on.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Camera name.
    pub camera: String,
    /// The track (as in its events).
    pub track_id: u64,
    /// `{run}-{camera}-{track_id}`, unique across restarts (as in its events).
    pub track_uid: String,
    /// The JPEG.
    pub jpeg: Vec<u8>,
}

/// Margin around the face box, so that the hair and chin are in the picture.
const MARGIN: f32 = 1.3;

/// JPEG quality: faces stay recognisable at a few kilobytes.
const QUALITY: u8 = 85;

/// The face at `face` (frame pixels) with a margin, scaled (nearest pixel) so that its
/// longer side is at most `max_side`, as a JPEG; `None` if the box is outside the frame.
pub fn face_jpeg(frame: &ImageView<'_>, face: Rect, max_side: u32) -> Option<Vec<u8>> {
    let (fw, fh) = (frame.width() as f32, frame.height() as f32);
    let r = face.scaled(MARGIN, MARGIN);
    let (x0, y0) = (r.x.max(0.0), r.y.max(0.0));
    let (x1, y1) = ((r.x + r.w).min(fw), (r.y + r.h).min(fh));
    if x1 - x0 < 2.0 || y1 - y0 < 2.0 {
        return None;
    }
    let scale = (max_side as f32 / (x1 - x0).max(y1 - y0)).min(1.0);
    let (w, h) = (((x1 - x0) * scale).round().max(1.0) as usize, ((y1 - y0) * scale).round().max(1.0) as usize);
    let rows: Vec<usize> = (0..h).map(|j| ((y0 + (j as f32 + 0.5) / scale) as usize).min(frame.height() - 1)).collect();
    let cols: Vec<usize> = (0..w).map(|i| ((x0 + (i as f32 + 0.5) / scale) as usize).min(frame.width() - 1)).collect();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for &y in &rows {
        for &x in &cols {
            rgb.extend_from_slice(&frame.rgb_at(x, y));
        }
    }
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, QUALITY);
    encoder.encode(&rgb, u16::try_from(w).ok()?, u16::try_from(h).ok()?, jpeg_encoder::ColorType::Rgb).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::RgbImage;

    #[test]
    fn a_face_becomes_a_small_jpeg_and_a_box_outside_the_frame_none() {
        let data: Vec<u8> = (0..640 * 480).flat_map(|i| [(i % 640 / 3) as u8, (i / 640 / 2) as u8, 128]).collect();
        let frame = RgbImage { data, width: 640, height: 480 };
        let jpeg = face_jpeg(&frame.view(), Rect { x: 200.0, y: 100.0, w: 200.0, h: 240.0 }, 160).unwrap();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
        // SOF0: height then width, the longer side scaled to 160.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
        let (h, w) =
            (u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]), u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]));
        assert_eq!(h, 160, "{w}x{h}");
        assert!((125..=140).contains(&w), "{w}x{h}");
        assert!(face_jpeg(&frame.view(), Rect { x: 700.0, y: 10.0, w: 50.0, h: 50.0 }, 160).is_none());
    }
}
