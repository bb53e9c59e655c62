//! Which software decoder a camera gets, and that the lean one sees what libav sees.
//!
//! `decoder = "auto"` gives H.264 to OpenH264 (about 35 MB less memory than libav) for the
//! profiles it declares, and everything else to libav; `decoder = "libav"` keeps libav.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use clefd::source::{Camera, CameraOptions, DecoderChoice, Ended, SourceSpec};
use gstreamer::prelude::*;

/// The first frame a file camera delivers (as RGB bytes) and the decoder it used.
fn first_frame(clip: &Path, decoder: DecoderChoice) -> (Vec<u8>, String) {
    let opts = CameraOptions {
        name: format!("{decoder:?}"),
        spec: SourceSpec::File { path: clip.to_path_buf() },
        width: 320,
        looping: false,
        realtime: false,
        fps_cap: None,
        rtsp_udp: false,
        rtsp_latency_ms: 0,
        decoder_threads: 1,
        decoder,
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let sent = Arc::new(Mutex::new(false));
    let camera = Camera::start(
        opts,
        move |frame| {
            let mut sent = sent.lock().unwrap();
            if !*sent {
                let view = frame.view().expect("frame has its pixels");
                let pixels: Vec<u8> = (0..frame.height).flat_map(|y| view.row(y).to_vec()).collect();
                *sent = tx.send(pixels).is_ok();
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

/// A clip in High 4:4:4 (which OpenH264 does not declare), made with x264enc.
fn high_444_clip(dir: &Path) -> PathBuf {
    gstreamer::init().unwrap();
    let out = dir.join("y444.mp4");
    let pipeline = gstreamer::parse::launch(&format!(
        "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1,format=Y444 \
         ! x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
        out.display()
    ))
    .unwrap();
    pipeline.set_state(gstreamer::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gstreamer::ClockTime::from_seconds(30),
            &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
        )
        .expect("the encoder finishes");
    assert!(matches!(msg.view(), gstreamer::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gstreamer::State::Null).unwrap();
    out
}

#[test]
fn auto_decodes_h264_with_openh264_and_sees_what_libav_sees() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 1.0, 10);
    let (lean, lean_decoder) = first_frame(&clip, DecoderChoice::Auto);
    let (libav, libav_decoder) = first_frame(&clip, DecoderChoice::Libav);
    assert_eq!(lean_decoder, "openh264dec");
    assert_eq!(libav_decoder, "avdec_h264");
    assert_eq!(lean.len(), libav.len());
    let mean_diff = lean.iter().zip(&libav).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / lean.len() as f64;
    assert!(mean_diff < 1.0, "the two decoders' first frames differ by {mean_diff:.2} per byte on average");
    assert!(lean.iter().any(|&v| v > 128) && lean.iter().any(|&v| v < 64), "a real picture, not a blank frame");
}

#[test]
fn auto_leaves_profiles_openh264_lacks_to_libav() {
    let dir = tempfile::tempdir().unwrap();
    let clip = high_444_clip(dir.path());
    let (pixels, decoder) = first_frame(&clip, DecoderChoice::Auto);
    assert_eq!(decoder, "avdec_h264");
    assert_eq!(pixels.len(), 320 * 240 * 3);
}
