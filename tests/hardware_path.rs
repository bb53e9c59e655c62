//! The Jetson decoding path, on a machine without NVIDIA's elements.
//!
//! There is no Jetson here, so this test registers stand-ins under NVIDIA's element names
//! (libav's H.264 decoder as `nvv4l2decoder`, at the rank NVIDIA gives it, and
//! `videoconvertscale` as `nvvidconv`). What it checks is clefd's side: that files and RTSP
//! cameras get the explicit Jetson chain (`parsebin ! nvv4l2decoder ! nvvidconv ! I420`)
//! rather than `decodebin`, that the choice is reported, and that `nvvidconv` hands over
//! I420 frames at the working size (so the software scaler after it has nothing left to
//! do). Whether NVIDIA's real elements decode is NVIDIA's side: see the README's Jetson
//! notes. (A test binary of its own: the stand-ins are process-wide.)

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use clefd::source::{Camera, DecoderChoice};
use gstreamer as gst;

const JETSON_CHAIN: &str = "parsebin name=dec ! nvv4l2decoder name=hwdec ! nvvidconv name=scale ! video/x-raw,format=I420,width=320,pixel-aspect-ratio=1/1 ! ";

fn stand_ins() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        register_stand_in("nvv4l2decoder", "avdec_h264", gst::Rank::from(i32::from(gst::Rank::PRIMARY) + 11));
        register_stand_in("nvvidconv", "videoconvertscale", gst::Rank::NONE);
    });
}

fn register_stand_in(name: &str, real: &str, rank: gst::Rank) {
    let factory = gst::ElementFactory::find(real).expect("the real element is installed");
    let factory = gst::prelude::PluginFeatureExtManual::load(&factory).expect("its plugin loads");
    gst::Element::register(None, name, rank, factory.element_type()).expect("stand-in registered");
}

#[test]
fn a_file_gets_the_explicit_jetson_chain_and_frames_leave_device_memory() {
    stand_ins();

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
    assert!(camera.description().contains(&format!("filesrc name=src ! {JETSON_CHAIN}")), "{}", camera.description());
    assert_eq!(frames.load(Ordering::Relaxed), 10, "every frame of the 1 s, 10 fps clip");
    camera.stop();
}

#[test]
fn an_rtsp_camera_gets_the_explicit_jetson_chain() {
    stand_ins();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 2.0, 10);
    let server = common::rtsp::RtspServer::start(0, &clip);
    let opts = common::rtsp::camera_options("jetson-rtsp", server.port, 320);
    let (tx, rx) = mpsc::sync_channel(64);
    let camera = Camera::start(
        opts,
        move |f| {
            let _ = tx.try_send((f.width, f.height));
        },
        |_| {},
    )
    .expect("camera starts");
    for _ in 0..5 {
        let size = rx.recv_timeout(Duration::from_secs(30)).expect("frames arrive over RTSP");
        assert_eq!(size, (320, 240), "scaled to the working width by nvvidconv");
    }
    assert_eq!(camera.decoder().as_deref(), Some("nvv4l2decoder"));
    assert!(camera.description().contains(&format!("latency=0 ! {JETSON_CHAIN}")), "{}", camera.description());
    camera.stop();
    server.stop();
}
