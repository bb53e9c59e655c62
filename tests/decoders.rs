//! Which software decoder a camera gets, and that the lean one sees what libav sees.
//!
//! `decoder = "auto"` gives Baseline-profile H.264 to OpenH264 (about 30 MB less memory than
//! libav, nearly as fast there), and everything else to libav; `decoder = "libav"` keeps
//! libav.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use clefd::engine::manifest::{Colour, Layout};
use clefd::engine::preprocess::{Sampling, sample};
use clefd::image::{Rect, RgbImage};
use clefd::source::{Camera, DecoderChoice, Ended};
use gstreamer::prelude::*;

/// The first frame a file camera delivers (converted to RGB) and the decoder it used.
fn first_frame(clip: &Path, decoder: DecoderChoice) -> (RgbImage, String) {
    first_frame_at(clip, decoder, 320)
}

/// As [`first_frame`], for a camera whose working width is `width`.
fn first_frame_at(clip: &Path, decoder: DecoderChoice, width: u32) -> (RgbImage, String) {
    let opts = common::file_camera(&format!("{decoder:?}"), clip, width, decoder);
    let (tx, rx) = mpsc::sync_channel(1);
    let sent = Arc::new(Mutex::new(false));
    let camera = Camera::start(
        opts,
        move |frame| {
            let mut sent = sent.lock().unwrap();
            if !*sent {
                let view = frame.view().expect("frame has its pixels");
                *sent = tx.send(view.to_rgb()).is_ok();
            }
        },
        |_: Ended| {},
    )
    .expect("camera starts");
    let pixels = rx.recv_timeout(Duration::from_secs(20)).expect("a frame within 20 s");
    let used = camera.decoder().expect("decodebin picked a decoder");
    camera.stop();
    (pixels, used)
}

/// A 320×240 clip made with x264enc from `format` pictures, in `profile`.
fn x264_clip(dir: &Path, format: &str, profile: &str) -> PathBuf {
    x264_clip_sized(dir, format, profile, (320, 240), 30)
}

/// Asserts the decoder's name where no hardware decoder takes precedence.
fn assert_decoder(used: &str, expected: &str) {
    if !common::hardware_decoder_installed() {
        assert_eq!(used, expected);
    }
}

/// A clip of `frames` `size` pictures made with x264enc from `format`, in `profile`.
fn x264_clip_sized(dir: &Path, format: &str, profile: &str, size: (u32, u32), frames: u32) -> PathBuf {
    let out = dir.join(format!("{format}-{profile}-{}x{}.mp4", size.0, size.1));
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={},height={},framerate=30/1,format={format} \
         ! x264enc speed-preset={preset} ! video/x-h264,profile={profile} ! h264parse ! mp4mux ! filesink location={}",
        size.0,
        size.1,
        out.display(),
        // ultrafast leaves out what makes Main and High profile (CABAC, B-frames).
        preset = if size.0 > 1920 { "ultrafast" } else { "veryfast" },
    );
    common::encode::run_to_eos(&desc, 30);
    out
}

#[test]
fn auto_decodes_h264_with_openh264_and_sees_what_libav_sees() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 1.0, 10);
    let (lean, lean_decoder) = first_frame(&clip, DecoderChoice::Auto);
    let (libav, libav_decoder) = first_frame(&clip, DecoderChoice::Libav);
    let (lean, libav) = (lean.data, libav.data);
    assert_decoder(&lean_decoder, "openh264dec");
    assert_decoder(&libav_decoder, "avdec_h264");
    assert_eq!(lean.len(), libav.len());
    let mean_diff = lean.iter().zip(&libav).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / lean.len() as f64;
    assert!(mean_diff < 1.0, "the two decoders' first frames differ by {mean_diff:.2} per byte on average");
    assert!(lean.iter().any(|&v| v > 128) && lean.iter().any(|&v| v < 64), "a real picture, not a blank frame");
}

#[test]
fn auto_leaves_profiles_openh264_lacks_to_libav() {
    let dir = tempfile::tempdir().unwrap();
    let clip = x264_clip(dir.path(), "Y444", "high-4:4:4");
    let (pixels, decoder) = first_frame(&clip, DecoderChoice::Auto);
    assert_decoder(&decoder, "avdec_h264");
    assert_eq!(pixels.data.len(), 320 * 240 * 3);
}

#[test]
fn auto_leaves_8k_pictures_openh264_cannot_decode_to_libav() {
    let dir = tempfile::tempdir().unwrap();
    // Baseline profile, which `auto` would otherwise give to OpenH264; it refuses 8K.
    let clip = x264_clip_sized(dir.path(), "I420", "constrained-baseline", (7680, 4320), 2);
    let (pixels, decoder) = first_frame(&clip, DecoderChoice::Auto);
    assert_decoder(&decoder, "avdec_h264");
    assert_eq!((pixels.width, pixels.height), (320, 180), "decoded and scaled to the working width");
}

#[test]
fn frames_are_scaled_down_to_the_working_width_never_up() {
    let dir = tempfile::tempdir().unwrap();
    let clip = x264_clip(dir.path(), "I420", "constrained-baseline");
    let (small, _) = first_frame_at(&clip, DecoderChoice::Auto, 640);
    assert_eq!((small.width, small.height), (320, 240), "a 320x240 stream stays 320x240 under width = 640");
    let (smaller, _) = first_frame_at(&clip, DecoderChoice::Auto, 160);
    assert_eq!((smaller.width, smaller.height), (160, 120), "and goes down to 160x120 under width = 160");
}

#[test]
fn auto_gives_main_and_high_profile_to_libav_where_openh264_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    for profile in ["main", "high"] {
        let clip = x264_clip(dir.path(), "I420", profile);
        let (_, decoder) = first_frame(&clip, DecoderChoice::Auto);
        assert_decoder(&decoder, "avdec_h264");
    }
    let baseline = x264_clip(dir.path(), "I420", "constrained-baseline");
    assert_eq!(first_frame(&baseline, DecoderChoice::Auto).1, "openh264dec");
}

/// The clip's first frame as GStreamer's `videoconvert` turns it into RGB, at 320 wide.
fn reference_rgb(clip: &Path) -> RgbImage {
    gstreamer::init().unwrap();
    let pipeline = gstreamer::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoscale ! videoconvert ! video/x-raw,format=RGB,width=320,pixel-aspect-ratio=1/1 ! appsink name=sink sync=false",
        clip.display()
    ))
    .unwrap()
    .downcast::<gstreamer::Pipeline>()
    .unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    pipeline.set_state(gstreamer::State::Playing).unwrap();
    let sample = sink.try_pull_sample(gstreamer::ClockTime::from_seconds(10)).expect("a frame");
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let stride = info.stride()[0] as usize;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let data = (0..h).flat_map(|y| map[y * stride..y * stride + w * 3].to_vec()).collect();
    pipeline.set_state(gstreamer::State::Null).unwrap();
    RgbImage { data, width: w, height: h }
}

#[test]
fn models_see_the_same_pixels_from_i420_as_from_videoconvert() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 1.0, 10);
    let reference = reference_rgb(&clip);
    let (ours, _) = first_frame(&clip, DecoderChoice::Libav);
    assert_eq!((ours.width, ours.height), (reference.width, reference.height));
    // videoconvert's fixed-point matrix sits a few levels below the textbook BT.601
    // conversion clefd uses (as FFmpeg and OpenCV do), so compare the offset and the
    // spread separately: a wrong matrix or misplaced chroma shows up in the spread.
    let (mean, spread) = offset_and_spread(&ours.data, &reference.data);
    assert!(
        mean.abs() < 5.0 && spread < 3.0,
        "I420 via clefd vs videoconvert's RGB: offset {mean:.2}, spread {spread:.2}"
    );

    // What a model input gets: a 64x64 grey crop around the face, sampled straight from
    // the I420 planes, against the same crop of videoconvert's RGB.
    let camera_view = {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let opts = common::file_camera("crop", &clip, 320, DecoderChoice::Libav);
        let s = Sampling { width: 64, height: 64, layout: Layout::Nchw, colour: Colour::Gray, affine: [(1.0, 0.0); 3] };
        let region = Rect { x: 60.0, y: 30.0, w: 120.0, h: 120.0 };
        let sent = Arc::new(Mutex::new(false));
        let camera = Camera::start(
            opts,
            move |frame| {
                let mut sent = sent.lock().unwrap();
                if !*sent {
                    let mut out = vec![0f32; s.len()];
                    sample(&frame.view().unwrap(), region, None, &s, &mut out);
                    *sent = tx.send((out, s.clone(), region)).is_ok();
                }
            },
            |_: Ended| {},
        )
        .unwrap();
        let got = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        camera.stop();
        got
    };
    let (from_i420, s, region) = camera_view;
    let mut from_rgb = vec![0f32; s.len()];
    sample(&reference.view(), region, None, &s, &mut from_rgb);
    let as_u8 = |v: &[f32]| v.iter().map(|&x| x.round().clamp(0.0, 255.0) as u8).collect::<Vec<_>>();
    let (mean, spread) = offset_and_spread(&as_u8(&from_i420), &as_u8(&from_rgb));
    assert!(mean.abs() < 5.0 && spread < 2.0, "grey crop from I420 vs from RGB: offset {mean:.2}, spread {spread:.2}");
    assert!(from_i420.iter().any(|&v| v > 100.0), "a real crop, not black");
}

/// Mean and standard deviation of `a - b`.
fn offset_and_spread(a: &[u8], b: &[u8]) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| f64::from(*x) - f64::from(*y)).collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d.len() as f64;
    (mean, var.sqrt())
}
