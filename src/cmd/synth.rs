//! Synthetic H.264 clips made with GStreamer (appsrc → x264enc → mp4mux): pictures moving
//! over a plain background. The demo video and the tests' clips are made this way, so no
//! video needs to be downloaded.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use clefd::engine::manifest::{Colour, Layout};
use clefd::engine::preprocess::{Sampling, sample};
use clefd::image::{Rect, RgbImage};

/// A picture that moves back and forth along a line.
#[derive(Debug, Clone)]
pub struct Sprite {
    /// The picture.
    pub image: RgbImage,
    /// Drawn size in pixels (width, height).
    pub size: (usize, usize),
    /// Top-left corner at the start of the path.
    pub from: (f32, f32),
    /// Top-left corner at the end of the path.
    pub to: (f32, f32),
    /// How many times it goes from `from` to `to` and back during the clip.
    pub round_trips: f32,
}

/// What to render.
#[derive(Debug, Clone)]
pub struct ClipSpec {
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// Frames per second.
    pub fps: u32,
    /// Number of frames.
    pub frames: u32,
    /// Pictures, drawn in order.
    pub sprites: Vec<Sprite>,
}

/// Why a clip could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make clip {path}: {reason}")]
pub struct SynthError {
    path: String,
    reason: String,
}

/// Renders `spec` to an MP4 file at `out`.
pub fn make_clip(spec: &ClipSpec, out: &Path) -> Result<(), SynthError> {
    let err = |reason: String| SynthError { path: out.display().to_string(), reason };
    gst::init().map_err(|e| err(e.to_string()))?;
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time ! videoconvert ! x264enc speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=baseline ! mp4mux ! filesink name=sink",
    )
    .map_err(|e| err(format!("{e} (x264enc needs gstreamer1.0-plugins-ugly)")))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| err("not a pipeline".into()))?;
    let sink = pipeline.by_name("sink").ok_or_else(|| err("no sink".into()))?;
    sink.set_property("location", out.display().to_string());
    let src = pipeline
        .by_name("src")
        .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| err("no appsrc".into()))?;
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", spec.width as i32)
        .field("height", spec.height as i32)
        .field("framerate", gst::Fraction::new(spec.fps as i32, 1))
        .build();
    src.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing).map_err(|_| err("cannot start the encoder".into()))?;
    let scaled = scale_sprites(spec);
    for i in 0..spec.frames {
        let data = render(spec, &scaled, i);
        let mut buffer = gst::Buffer::from_mut_slice(data);
        if let Some(b) = buffer.get_mut() {
            let dur = gst::ClockTime::SECOND / u64::from(spec.fps);
            b.set_pts(dur * u64::from(i));
            b.set_duration(dur);
        }
        src.push_buffer(buffer).map_err(|e| err(format!("encoder refused a frame: {e:?}")))?;
    }
    src.end_of_stream().map_err(|e| err(format!("{e:?}")))?;
    let bus = pipeline.bus().ok_or_else(|| err("no bus".into()))?;
    let result = match bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(120), &[gst::MessageType::Eos, gst::MessageType::Error])
    {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(err(e.error().to_string())),
            _ => Ok(()),
        },
        None => Err(err("encoder did not finish in 120 s".into())),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn scale_sprites(spec: &ClipSpec) -> Vec<RgbImage> {
    spec.sprites.iter().map(|s| resize(&s.image, s.size.0, s.size.1)).collect()
}

/// Frame `i` of the clip, packed RGB.
fn render(spec: &ClipSpec, scaled: &[RgbImage], i: u32) -> Vec<u8> {
    let mut data = background(spec.width, spec.height);
    let t = i as f32 / spec.frames.max(1) as f32;
    for (sprite, img) in spec.sprites.iter().zip(scaled) {
        let phase = (t * sprite.round_trips).fract() * 2.0;
        let k = if phase <= 1.0 { phase } else { 2.0 - phase };
        let x = sprite.from.0 + (sprite.to.0 - sprite.from.0) * k;
        let y = sprite.from.1 + (sprite.to.1 - sprite.from.1) * k;
        blit(&mut data, spec.width * 3, spec.width, spec.height, img, x.round() as i64, y.round() as i64);
    }
    data
}

/// One frame of the clip as an image, without encoding (the tests, which include this
/// file, feed it to the pipeline directly).
#[allow(dead_code)]
pub fn frame(spec: &ClipSpec, i: u32) -> RgbImage {
    RgbImage { data: render(spec, &scale_sprites(spec), i), width: spec.width, height: spec.height }
}

/// A soft vertical gradient, so the encoder has something to do besides the sprites.
fn background(w: usize, h: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let v = (70 + 80 * y / h.max(1)) as u8;
        for _ in 0..w {
            data.extend_from_slice(&[v, v, v.saturating_add(20)]);
        }
    }
    data
}

fn resize(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    let s = Sampling { width: w, height: h, layout: Layout::Nhwc, colour: Colour::Rgb, affine: [(1.0, 0.0); 3] };
    let mut out = vec![0.0; s.len()];
    let region = Rect { x: 0.0, y: 0.0, w: img.width as f32, h: img.height as f32 };
    sample(&img.view(), region, None, &s, &mut out);
    RgbImage { data: out.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect(), width: w, height: h }
}

fn blit(dst: &mut [u8], stride: usize, w: usize, h: usize, img: &RgbImage, x: i64, y: i64) {
    for row in 0..img.height {
        let dy = y + row as i64;
        if dy < 0 || dy >= h as i64 {
            continue;
        }
        let x0 = x.max(0);
        let x1 = (x + img.width as i64).min(w as i64);
        if x0 >= x1 {
            continue;
        }
        let src_off = (row * img.width + (x0 - x) as usize) * 3;
        let len = (x1 - x0) as usize * 3;
        let dst_off = dy as usize * stride + x0 as usize * 3;
        dst[dst_off..dst_off + len].copy_from_slice(&img.data[src_off..src_off + len]);
    }
}
