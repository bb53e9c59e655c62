//! Snapshots (`[snapshots]`): a small JPEG of a face, taken when its track begins, for a
//! dashboard or a log of who was seen. The worker's thread only crops the face from the
//! frame its `new` event came from (rare, and cheap); the JPEG is made where the picture
//! goes (`service::snapshots`): by the snapshot writer's thread for a folder, so a slow
//! encode never holds up analysis.

use std::sync::Arc;

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
    /// The face's pixels, shared with whoever encodes them (never copied again).
    pub crop: Arc<Crop>,
    /// The JPEG once made (empty until then): only a picture that goes to MQTT is
    /// encoded before it is handed on, since it is published ahead of its event.
    pub jpeg: Vec<u8>,
}

impl Snapshot {
    /// `crop`, for `camera`'s track `track_id` (`track_uid`), not encoded yet.
    pub fn new(camera: String, track_id: u64, track_uid: String, crop: Crop) -> Snapshot {
        Snapshot { camera, track_id, track_uid, crop: Arc::new(crop), jpeg: Vec::new() }
    }
}

/// A face's pixels (RGB, rows top to bottom), cut out and scaled down on the worker's
/// thread; [`Crop::jpeg`] encodes them wherever that costs analysis nothing.
#[derive(Clone, PartialEq)]
pub struct Crop {
    rgb: Vec<u8>,
    width: u16,
    height: u16,
}

impl std::fmt::Debug for Crop {
    /// The size, not the pixels.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crop({}x{})", self.width, self.height)
    }
}

impl Crop {
    /// `rgb` as a `width` x `height` picture; `None` if the sizes do not match.
    pub fn from_rgb(rgb: Vec<u8>, width: u16, height: u16) -> Option<Crop> {
        (width > 0 && height > 0 && rgb.len() == usize::from(width) * usize::from(height) * 3).then_some(Crop {
            rgb,
            width,
            height,
        })
    }

    /// Width and height in pixels.
    pub fn size(&self) -> (u16, u16) {
        (self.width, self.height)
    }

    /// The picture as a JPEG; `None` if the encoder refuses it.
    pub fn jpeg(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut out, QUALITY);
        encoder.encode(&self.rgb, self.width, self.height, jpeg_encoder::ColorType::Rgb).ok()?;
        Some(out)
    }
}

/// Margin around the face box, so that the hair and chin are in the picture.
const MARGIN: f32 = 1.3;

/// JPEG quality: faces stay recognisable at a few kilobytes.
const QUALITY: u8 = 85;

/// The face at `face` (frame pixels) with a margin, scaled (nearest pixel) so that its
/// longer side is at most `max_side`; `None` if the box is outside the frame. Nothing is
/// encoded here: this runs on the worker's thread.
pub fn face_crop(frame: &ImageView<'_>, face: Rect, max_side: u32) -> Option<Crop> {
    let (fw, fh) = (frame.width() as f32, frame.height() as f32);
    let r = face.scaled(MARGIN, MARGIN);
    let (x0, y0) = (r.x.max(0.0), r.y.max(0.0));
    let (x1, y1) = ((r.x + r.w).min(fw), (r.y + r.h).min(fh));
    if x1 - x0 < 2.0 || y1 - y0 < 2.0 {
        return None;
    }
    let scale = (max_side as f32 / (x1 - x0).max(y1 - y0)).min(1.0);
    let (w, h) = (((x1 - x0) * scale).round().max(1.0) as usize, ((y1 - y0) * scale).round().max(1.0) as usize);
    let (width, height) = (u16::try_from(w).ok()?, u16::try_from(h).ok()?);
    let rows: Vec<usize> = (0..h).map(|j| ((y0 + (j as f32 + 0.5) / scale) as usize).min(frame.height() - 1)).collect();
    let cols: Vec<usize> = (0..w).map(|i| ((x0 + (i as f32 + 0.5) / scale) as usize).min(frame.width() - 1)).collect();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for &y in &rows {
        for &x in &cols {
            rgb.extend_from_slice(&frame.rgb_at(x, y));
        }
    }
    Crop::from_rgb(rgb, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::RgbImage;

    fn frame(width: usize, height: usize) -> RgbImage {
        let data: Vec<u8> = (0..width * height)
            .flat_map(|i| [(i % width / 3) as u8, (i / width / 2) as u8, (i % 7 * 30) as u8])
            .collect();
        RgbImage { data, width, height }
    }

    #[test]
    fn a_face_becomes_a_small_jpeg_and_a_box_outside_the_frame_none() {
        let frame = frame(640, 480);
        let crop = face_crop(&frame.view(), Rect { x: 200.0, y: 100.0, w: 200.0, h: 240.0 }, 160).unwrap();
        let jpeg = crop.jpeg().unwrap();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
        // SOF0: height then width, the longer side scaled to 160.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
        let (h, w) =
            (u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]), u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]));
        assert_eq!(h, 160, "{w}x{h}");
        assert!((125..=140).contains(&w), "{w}x{h}");
        assert_eq!(crop.size(), (w, h), "the crop is the picture's size");
        assert!(face_crop(&frame.view(), Rect { x: 700.0, y: 10.0, w: 50.0, h: 50.0 }, 160).is_none());
        assert!(Crop::from_rgb(vec![0; 11], 2, 2).is_none(), "pixels that do not fill the size");
    }

    /// What the worker's thread does per snapshot: crop only; the snapshot it hands on has
    /// no JPEG yet. Prints the worker's time per snapshot before (crop and encode) and now
    /// (crop), for the record: `cargo test --release --lib -- snapshot::tests --nocapture`.
    #[test]
    fn the_workers_thread_crops_and_encodes_nothing() {
        let frame = frame(1920, 1080);
        let face = Rect { x: 700.0, y: 200.0, w: 500.0, h: 600.0 };
        for side in [160, 1024] {
            let crop = face_crop(&frame.view(), face, side).unwrap();
            let shot = Snapshot::new("door".into(), 7, "run-door-7".into(), crop.clone());
            assert!(shot.jpeg.is_empty(), "nothing encoded on the worker's thread");
            assert_eq!(*shot.crop, crop);
            let rounds = 20;
            let time = |f: &dyn Fn()| {
                let start = std::time::Instant::now();
                (0..rounds).for_each(|_| f());
                start.elapsed() / rounds
            };
            let cropping = time(&|| assert!(face_crop(&frame.view(), face, side).is_some()));
            let encoding = time(&|| assert!(face_crop(&frame.view(), face, side).and_then(|c| c.jpeg()).is_some()));
            let (w, h) = crop.size();
            eprintln!("snapshot {w}x{h}: worker's thread {cropping:?} now (crop), {encoding:?} before (crop + JPEG)");
        }
    }
}
