//! Synthesised clips of a real face (the astronaut picture), rendered by the CLI's own
//! `make-clip` code, and what the tests need to know about the machine's decoders.

use std::path::Path;

use super::synth::{self, ClipSpec, Sprite};

/// The astronaut picture, decoded.
pub fn astronaut() -> clefd::image::RgbImage {
    clefd::source::decode_image(&super::repo().join("assets/astronaut.png")).expect("astronaut.png decodes")
}

/// Renders `frames` frames of the astronaut sitting still (640x480, 15 fps).
pub fn still_clip(path: &Path, frames: u32) {
    let image = astronaut();
    let still = Sprite { image, size: (360, 360), from: (140.0, 60.0), to: (140.0, 60.0), round_trips: 0.0 };
    let spec = ClipSpec { width: 640, height: 480, fps: 15, frames, sprites: vec![still] };
    synth::make_clip(&spec, path).expect("clip renders");
}

/// Renders `frames` frames of the astronaut crossing the frame once and leaving it
/// (640x480, 15 fps): looped, a new track begins on every pass.
pub fn passing_clip(path: &Path, frames: u32) {
    let image = astronaut();
    let passing = Sprite { image, size: (360, 360), from: (40.0, 60.0), to: (2000.0, 60.0), round_trips: 0.5 };
    let spec = ClipSpec { width: 640, height: 480, fps: 15, frames, sprites: vec![passing] };
    synth::make_clip(&spec, path).expect("clip renders");
}

/// Renders a clip of the astronaut sliding left and right.
pub fn astronaut_clip(path: &Path, seconds: f32, fps: u32) {
    let image = astronaut();
    let spec = ClipSpec {
        width: 640,
        height: 480,
        fps,
        frames: (seconds * fps as f32) as u32,
        sprites: vec![Sprite { image, size: (360, 360), from: (40.0, 60.0), to: (240.0, 60.0), round_trips: 1.0 }],
    };
    synth::make_clip(&spec, path).expect("clip renders");
}

/// A file camera played once, as fast as it decodes, at `width`, with `decoder`.
pub fn file_camera(
    name: &str,
    clip: &Path,
    width: u32,
    decoder: clefd::source::DecoderChoice,
) -> clefd::source::CameraOptions {
    clefd::source::CameraOptions {
        name: name.into(),
        spec: clefd::source::SourceSpec::File { path: clip.to_path_buf() },
        width,
        looping: false,
        realtime: false,
        fps_cap: None,
        rtsp_udp: false,
        rtsp_latency_ms: 0,
        decoder_threads: 1,
        decoder,
    }
}

/// Whether a hardware H.264 decoder is installed: decodebin prefers it, so assertions on
/// the software decoder's name do not apply on such a machine (the caller says so).
pub fn hardware_decoder_installed() -> bool {
    gstreamer::init().expect("GStreamer initialises");
    let found = ["nvv4l2decoder", "nvh264dec", "nvh264sldec", "v4l2h264dec", "vah264dec", "vaapih264dec"]
        .iter()
        .find(|n| gstreamer::ElementFactory::find(n).is_some());
    if let Some(name) = found {
        eprintln!("{name} is installed: it decodes H.264 here, so the software decoder's name is not checked");
    }
    found.is_some()
}
