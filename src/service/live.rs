//! The live view on the HTTP listener: each camera's last analysed frame with its faces
//! drawn (`/cameras/{name}/latest.jpg`) and the same as MJPEG (`/cameras/{name}/live.mjpeg`,
//! at most [`MJPEG_FPS`] frames a second, at most [`MAX_VIEWERS`] viewers). Frames are
//! copied on the frame path only while someone looks (`pipeline::view`); drawing (and
//! blurring faces, when asked) and encoding happen here, once per frame shown whatever the
//! number of viewers, on a blocking thread. A viewer that does not keep up misses frames
//! (the newest frame is sent whenever it can take one) and, stalled, is dropped
//! (`service::stall`): analysis never waits for one. A viewer is sent a part at least
//! every [`RESEND`] whatever its camera does (the last frame again, or a small picture
//! saying the camera sends nothing), so that a viewer sees why nothing moves, and one whose
//! network vanished is noticed at a write and its seat given back, even on a camera that
//! is disabled, failed or silent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::Stream;

use super::font;
use super::http::Health;
use crate::pipeline::view::Shot;

/// Most MJPEG frames a second a viewer gets.
pub const MJPEG_FPS: u32 = 5;
/// Most MJPEG viewers at once (all cameras); more are told to come back later.
pub const MAX_VIEWERS: usize = 8;
/// How long a first look waits for a camera's first shot.
const FIRST_SHOT: Duration = Duration::from_secs(3);
/// Longest a viewer goes without a part. A viewer who closes its end is noticed by hyper
/// at once (it sees the end of its input while it sends); one whose host vanished
/// without closing is learnt of only by writing: this, with the connection's
/// `TCP_USER_TIMEOUT`, bounds how long such a viewer keeps its seat on a camera that sends
/// nothing (disabled, failed, silent).
pub const RESEND: Duration = Duration::from_secs(2);
/// Size of the picture sent for a camera without frames.
const PLACEHOLDER: (usize, usize) = (320, 240);

/// Box colours, by track id (grey for a face the camera's filter leaves out).
const PALETTE: [[u8; 3]; 6] = [[0, 230, 0], [255, 160, 0], [0, 170, 255], [255, 0, 200], [255, 240, 0], [0, 230, 200]];
const LEFT_OUT: [u8; 3] = [150, 150, 150];
/// Outline of a zone (faces count only inside), and of an ignored area.
const ZONE: [u8; 3] = [255, 255, 255];
const IGNORED: [u8; 3] = [255, 40, 40];

/// A camera's last shown shot's number and its JPEG.
type Shown = HashMap<String, (u64, Bytes)>;

/// A camera's last placeholder's title and its JPEG.
type Placeholders = HashMap<String, (String, Bytes)>;

/// The JPEG of each camera's last shown shot, and of its last placeholder, so viewers
/// share one encoding (one of each per camera: bounded by the cameras configured).
#[derive(Debug)]
pub struct Encoded {
    latest: Mutex<Shown>,
    placeholders: Mutex<Placeholders>,
    viewers: Arc<tokio::sync::Semaphore>,
}

impl Default for Encoded {
    fn default() -> Self {
        Encoded::new()
    }
}

impl Encoded {
    /// No encoding yet; room for [`MAX_VIEWERS`].
    pub fn new() -> Encoded {
        Encoded {
            latest: Mutex::default(),
            placeholders: Mutex::default(),
            viewers: Arc::new(tokio::sync::Semaphore::new(MAX_VIEWERS)),
        }
    }
}

/// Whether the camera is configured (has reported a state).
pub fn known(health: &Health, camera: &str) -> bool {
    health.cameras.lock().is_ok_and(|c| c.contains_key(camera))
}

/// The camera's last analysed frame as a JPEG, drawn; `None` if none came in time.
pub async fn latest(health: &Arc<Health>, camera: &str, blur_faces: bool) -> Option<Bytes> {
    let views = health.probe.views().clone();
    let deadline = tokio::time::Instant::now() + FIRST_SHOT;
    loop {
        if let Some(shot) = views.watch(camera) {
            return encoded(health, camera, shot, blur_faces).await;
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A viewer's stream: its seat, what it was last shown and when.
struct Viewer {
    health: Arc<Health>,
    camera: String,
    blur_faces: bool,
    tick: tokio::time::Interval,
    shown: u64,
    sent: tokio::time::Instant,
    _seat: tokio::sync::OwnedSemaphorePermit,
}

/// The camera as MJPEG parts (each the newest frame when the viewer can take one, and at
/// least one every [`RESEND`]) until the camera goes; `None` when every seat is taken.
/// The seat is given back when the stream is dropped: the viewer went, stalled, or the
/// camera did.
pub fn stream(
    health: Arc<Health>,
    camera: String,
    blur_faces: bool,
) -> Option<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static> {
    let seat = health.live.viewers.clone().try_acquire_owned().ok()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / MJPEG_FPS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sent = tokio::time::Instant::now();
    let viewer = Viewer { health, camera, blur_faces, tick, shown: 0, sent, _seat: seat };
    Some(futures_util::stream::unfold(viewer, |mut v| async move {
        loop {
            v.tick.tick().await;
            if !known(&v.health, &v.camera) {
                return None;
            }
            let Some(jpeg) = next_part(&mut v).await else { continue };
            v.sent = tokio::time::Instant::now();
            let head = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
            let mut part = Vec::with_capacity(head.len() + jpeg.len() + 2);
            part.extend_from_slice(head.as_bytes());
            part.extend_from_slice(&jpeg);
            part.extend_from_slice(b"\r\n");
            return Some((Ok(Bytes::from(part)), v));
        }
    }))
}

/// What the viewer is sent now: a new frame; else, once [`RESEND`] has passed, the last
/// frame again while the camera streams, or a picture saying it sends nothing; else nothing.
async fn next_part(v: &mut Viewer) -> Option<Bytes> {
    let shot = v.health.probe.views().watch(&v.camera);
    let due = v.sent.elapsed() >= RESEND;
    let status = camera_status(&v.health, &v.camera).0;
    match shot {
        Some(shot) if shot.number != v.shown => {
            v.shown = shot.number;
            encoded(&v.health, &v.camera, shot, v.blur_faces).await
        }
        Some(shot) if due && status == "streaming" => encoded(&v.health, &v.camera, shot, v.blur_faces).await,
        _ if due => placeholder_for(&v.health.live, &v.camera, format!("{}  {status}  no frames", v.camera)).await,
        _ => None,
    }
}

/// A camera's state and frame rate as shown in titles.
fn camera_status(health: &Health, camera: &str) -> (&'static str, f64) {
    health
        .cameras
        .lock()
        .ok()
        .and_then(|c| c.get(camera).map(|s| (s.status.as_str(), s.fps)))
        .unwrap_or(("unknown", 0.0))
}

/// The camera's placeholder titled `title`, encoded once for every viewer while the title
/// stays the same.
async fn placeholder_for(live: &Encoded, camera: &str, title: String) -> Option<Bytes> {
    if let Ok(shown) = live.placeholders.lock()
        && let Some((titled, jpeg)) = shown.get(camera)
        && *titled == title
    {
        return Some(jpeg.clone());
    }
    let drawn = title.clone();
    let jpeg = Bytes::from(tokio::task::spawn_blocking(move || placeholder(&drawn)).await.ok()??);
    if let Ok(mut shown) = live.placeholders.lock() {
        shown.insert(camera.to_string(), (title, jpeg.clone()));
    }
    Some(jpeg)
}

/// A small grey picture with only a title: what a viewer sees of a camera without frames.
fn placeholder(title: &str) -> Option<Vec<u8>> {
    let (width, height) = PLACEHOLDER;
    let image = crate::image::RgbImage { data: vec![64; width * height * 3], width, height };
    let shot = Shot { image, faces: Vec::new(), zones: Vec::new(), ignore: Vec::new(), number: 0 };
    render(&shot, title, false)
}

/// The JPEG of `shot`, drawn and encoded once whoever asks.
async fn encoded(health: &Arc<Health>, camera: &str, shot: Arc<Shot>, blur_faces: bool) -> Option<Bytes> {
    if let Ok(latest) = health.live.latest.lock()
        && let Some((number, jpeg)) = latest.get(camera)
        && *number == shot.number
    {
        return Some(jpeg.clone());
    }
    let (status, fps) = camera_status(health, camera);
    let title = format!("{camera}  {status}  {fps:.1} fps");
    let number = shot.number;
    let jpeg = tokio::task::spawn_blocking(move || render(&shot, &title, blur_faces)).await.ok()??;
    let jpeg = Bytes::from(jpeg);
    if let Ok(mut latest) = health.live.latest.lock() {
        latest.insert(camera.to_string(), (number, jpeg.clone()));
    }
    Some(jpeg)
}

/// The shot with a title bar and each face's box, track and label (the factual label
/// beside it, struck through, where debiasing changed it), as a JPEG; with `blur_faces`,
/// what is inside each box is blurred first.
pub fn render(shot: &Shot, title: &str, blur_faces: bool) -> Option<Vec<u8>> {
    let (w, h) = (shot.image.width, shot.image.height);
    let mut canvas = Canvas { data: shot.image.data.clone(), width: w, height: h };
    if blur_faces {
        for face in &shot.faces {
            super::blur::blur(&mut canvas.data, w, h, corners(&face.rect));
        }
    }
    for (areas, colour) in [(&shot.zones, ZONE), (&shot.ignore, IGNORED)] {
        for area in areas {
            canvas.area(area, colour);
        }
    }
    canvas.fill(0, 0, w, font::HEIGHT + 4, [0, 0, 0]);
    canvas.text(3, 2, title, [255, 255, 255], false);
    for face in &shot.faces {
        let colour = face.track.map_or(LEFT_OUT, |id| PALETTE[id as usize % PALETTE.len()]);
        let [x0, y0, x1, y1] = corners(&face.rect);
        canvas.rectangle(x0, y0, x1, y1, 3, colour);
        let mut label = match face.track {
            Some(id) => format!("#{id} {}", face.label),
            None => format!("{} (left out)", face.label),
        };
        let y = y0.saturating_sub(font::HEIGHT + 3).max(font::HEIGHT + 4);
        let width = (label.len() + 1) * font::WIDTH;
        let factual = face.factual.as_ref().filter(|f| **f != face.label);
        let extra = factual.map_or(0, |f| (f.len() + 1) * font::WIDTH);
        canvas.fill(x0, y, width + extra + 4, font::HEIGHT + 2, [0, 0, 0]);
        canvas.text(x0 + 2, y + 1, &label, colour, false);
        if let Some(f) = factual {
            label.push(' ');
            canvas.text(x0 + 2 + label.len() * font::WIDTH, y + 1, f, [200, 200, 200], true);
        }
    }
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, 80);
    encoder.encode(&canvas.data, u16::try_from(w).ok()?, u16::try_from(h).ok()?, jpeg_encoder::ColorType::Rgb).ok()?;
    Some(out)
}

/// A face's box as pixel corners `[x0, y0, x1, y1]`, clipped at 0.
fn corners(r: &crate::image::Rect) -> [usize; 4] {
    [r.x.max(0.0) as usize, r.y.max(0.0) as usize, (r.x + r.w).max(0.0) as usize, (r.y + r.h).max(0.0) as usize]
}

/// Packed RGB to draw on.
struct Canvas {
    data: Vec<u8>,
    width: usize,
    height: usize,
}

impl Canvas {
    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.put(xx, yy, c);
            }
        }
    }

    fn rectangle(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, thick: usize, c: [u8; 3]) {
        let (w, h) = (x1.saturating_sub(x0) + 1, y1.saturating_sub(y0) + 1);
        self.fill(x0, y0, w, thick, c);
        self.fill(x0, (y1 + 1).saturating_sub(thick), w, thick, c);
        self.fill(x0, y0, thick, h, c);
        self.fill((x1 + 1).saturating_sub(thick), y0, thick, h, c);
    }

    /// A zone's outline (normalised corners), two pixels wide.
    fn area(&mut self, area: &crate::config::Area, c: [u8; 3]) {
        let (w, h) = (self.width as f32, self.height as f32);
        let corners: Vec<[f32; 2]> = match area {
            crate::config::Area::Rect([x, y, rw, rh]) => vec![[*x, *y], [x + rw, *y], [x + rw, y + rh], [*x, y + rh]],
            crate::config::Area::Polygon(points) => points.clone(),
        };
        for (i, a) in corners.iter().enumerate() {
            let b = corners[(i + 1) % corners.len()];
            let (x0, y0, x1, y1) = (a[0] * w, a[1] * h, b[0] * w, b[1] * h);
            let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
            for k in 0..=steps {
                let t = k as f32 / steps as f32;
                let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
                let (x, y) = (x.clamp(0.0, w - 2.0) as usize, y.clamp(0.0, h - 2.0) as usize);
                self.fill(x, y, 2, 2, c);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, c: [u8; 3], struck: bool) {
        for (i, ch) in text.chars().enumerate() {
            let code = ch as usize;
            let glyph =
                if (32..127).contains(&code) { &font::GLYPHS[code - 32] } else { &font::GLYPHS[b'?' as usize - 32] };
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..font::WIDTH {
                    if bits & (1 << (font::WIDTH - 1 - col)) != 0 {
                        self.put(x + i * font::WIDTH + col, y + row, c);
                    }
                }
            }
        }
        if struck {
            self.fill(x, y + font::HEIGHT / 2 + 1, text.chars().count() * font::WIDTH, 1, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Rect, RgbImage};
    use crate::pipeline::view::ShotFace;

    #[tokio::test]
    async fn a_placeholder_is_encoded_once_per_camera_and_title() {
        let live = Encoded::new();
        let first = placeholder_for(&live, "off", "off  disabled  no frames".into()).await.unwrap();
        let again = placeholder_for(&live, "off", "off  disabled  no frames".into()).await.unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same encoding, shared");
        let other = placeholder_for(&live, "gone", "gone  disabled  no frames".into()).await.unwrap();
        assert_ne!(other.as_ptr(), first.as_ptr(), "each camera its own");
        let failed = placeholder_for(&live, "off", "off  failed  no frames".into()).await.unwrap();
        assert_ne!(failed, first, "a new status, a new picture");
        assert_eq!(live.placeholders.lock().unwrap().len(), 2, "one kept per camera");
    }

    #[test]
    fn boxes_and_labels_are_drawn_where_the_faces_are() {
        let image = RgbImage { data: vec![40; 320 * 240 * 3], width: 320, height: 240 };
        let face = ShotFace {
            rect: Rect { x: 100.0, y: 80.0, w: 60.0, h: 70.0 },
            track: Some(0),
            label: "happy".into(),
            factual: Some("sad".into()),
        };
        let shot = Shot { image, faces: vec![face], zones: Vec::new(), ignore: Vec::new(), number: 1 };
        let jpeg = render(&shot, "door  streaming  15.0 fps", false).unwrap();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF]);
        // Drawn before encoding: the same canvas, checked exactly.
        let mut canvas = Canvas { data: shot.image.data.clone(), width: 320, height: 240 };
        canvas.rectangle(100, 80, 160, 150, 3, PALETTE[0]);
        // A zone's outline, where its normalised corners say.
        canvas.area(&crate::config::Area::Rect([0.5, 0.5, 0.25, 0.25]), ZONE);
        let at = |x: usize, y: usize| &canvas.data[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3];
        assert_eq!(at(101, 115), &PALETTE[0][..], "the left edge");
        assert_eq!(at(130, 115), &[40, 40, 40][..], "inside is left alone");
        assert_eq!(at(160, 120), &ZONE[..], "the zone's corner");
        assert_eq!(at(200, 180), &ZONE[..], "its bottom edge");
        assert_eq!(at(200, 150), &[40, 40, 40][..], "inside the zone");
    }
}
