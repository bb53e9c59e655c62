//! The Jetson decoding path, on a machine without NVIDIA's elements.
//!
//! There is no Jetson here, so this test registers stand-ins under NVIDIA's element names
//! (libav's H.264 decoder as `nvv4l2decoder`, at the rank NVIDIA gives it, and
//! `videoconvertscale` as `nvvidconv`). What it checks is clefd's side: that `decodebin`
//! picks the hardware decoder over both software ones, that the choice is reported, and
//! that the camera's pipeline has `nvvidconv` copy frames out of device memory as I420 at
//! the working size (so the software scaler after it has nothing left to do). Whether NVIDIA's real elements decode is NVIDIA's side: see the
//! README's Jetson notes. (A test binary of its own: the stand-ins are process-wide.)

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use clefd::source::{Camera, DecoderChoice};
use gstreamer as gst;

fn register_stand_in(name: &str, real: &str, rank: gst::Rank) {
    let factory = gst::ElementFactory::find(real).expect("the real element is installed");
    let factory = gst::prelude::PluginFeatureExtManual::load(&factory).expect("its plugin loads");
    gst::Element::register(None, name, rank, factory.element_type()).expect("stand-in registered");
}

#[test]
fn with_nvidia_elements_the_hardware_decoder_wins_and_frames_leave_device_memory() {
    gst::init().unwrap();
    register_stand_in("nvv4l2decoder", "avdec_h264", gst::Rank::from(i32::from(gst::Rank::PRIMARY) + 11));
    register_stand_in("nvvidconv", "videoconvertscale", gst::Rank::NONE);

    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 1.0, 10);
    let opts = common::file_camera("jetson", &clip, 320, DecoderChoice::Auto);
    let frames = Arc::new(AtomicU64::new(0));
    let counted = frames.clone();
    let (end_tx, end_rx) = mpsc::channel();
    let camera = Camera::start(
        opts,
        move |f| {
            assert_eq!((f.width, f.height), (320, 240), "scaled to the working width by nvvidconv");
            counted.fetch_add(1, Ordering::Relaxed);
        },
        move |ended| {
            let _ = end_tx.send(ended);
        },
    )
    .expect("camera starts");
    let ended = end_rx.recv_timeout(Duration::from_secs(20)).expect("the clip ends");
    assert_eq!(ended, clefd::source::Ended::Eos);
    assert_eq!(camera.decoder().as_deref(), Some("nvv4l2decoder"), "hardware ranks above libav and OpenH264");
    assert!(
        camera
            .description()
            .contains("decodebin name=dec ! nvvidconv ! video/x-raw,format=I420,width=320,pixel-aspect-ratio=1/1 ! "),
        "{}",
        camera.description()
    );
    assert_eq!(frames.load(Ordering::Relaxed), 10, "every frame of the 1 s, 10 fps clip");
    camera.stop();
}
