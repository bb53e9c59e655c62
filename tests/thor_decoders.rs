//! Decoder choice on a Jetson Thor, and `decoder = "software"`, through real pipelines on
//! a machine without NVIDIA's elements.
//!
//! The process plays a Thor (its files under `CLEFD_SYSROOT`) and registers stand-ins
//! under NVIDIA's element names, each a real decoder that works here: libjpeg's `jpegdec`
//! as `nvv4l2decoder` (Thor's offers JPEG caps it cannot decode: a camera that got it here
//! would decode, so only the choice shows the fault) and as `nvjpegdec`, OpenH264 as
//! `nvh264dec` (a hardware H.264 decoder, ranked above the software ones as NVIDIA ranks
//! its own) and `videoconvertscale` as `nvvidconv`. What it checks is clefd's side: MJPEG inside a file (or an RTSP stream:
//! the same chain) reaches `nvjpegdec`, never `nvv4l2decoder`, and a `software` camera
//! gets the CPU's decoders and no `nvvidconv` while hardware decoders rank first.
//! (A test binary of its own: the stand-ins and the platform are process-wide.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use clefd::source::{Camera, DecoderChoice, Ended};
use gstreamer as gst;

/// Lays out a Thor's files, points clefd at them and registers the stand-ins, once.
fn thor() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let root = std::env::temp_dir().join(format!("clefd-thor-decoders-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(root.join("proc/device-tree")).expect("mkdir");
        std::fs::write(root.join("etc/nv_tegra_release"), "# R38 (release), REVISION: 2.0, GCID: 1\n").expect("write");
        std::fs::write(root.join("proc/device-tree/model"), "NVIDIA Jetson AGX Thor Developer Kit\0").expect("write");
        // SAFETY: every test calls `thor()` first and waits on this `Once`, so no thread of
        // this process reads the environment while it is written.
        unsafe { std::env::set_var("CLEFD_SYSROOT", &root) };
        gst::init().unwrap();
        let primary = i32::from(gst::Rank::PRIMARY);
        // Ranked as NVIDIA ranks its own, above every software decoder.
        register_stand_in("nvv4l2decoder", "jpegdec", gst::Rank::from(primary + 11));
        register_stand_in("nvh264dec", "openh264dec", gst::Rank::from(primary + 11));
        // Below jpegdec: only clefd's choice, not its rank, can make decodebin take it.
        register_stand_in("nvjpegdec", "jpegdec", gst::Rank::MARGINAL);
        register_stand_in("nvvidconv", "videoconvertscale", gst::Rank::NONE);
    });
}

/// Registers `name` as a factory of a new type derived from `real`'s, so that the
/// stand-in's elements report their own name and `real`'s keep theirs (two factories of
/// one type share its class, and the class names one factory).
fn register_stand_in(name: &str, real: &str, rank: gst::Rank) {
    use gst::glib::gobject_ffi;
    use gst::glib::translate::{FromGlib, IntoGlib};
    let factory = gst::ElementFactory::find(real).expect("the real element is installed");
    let factory = gst::prelude::PluginFeatureExtManual::load(&factory).expect("its plugin loads");
    let parent = factory.element_type().into_glib();
    let type_name = std::ffi::CString::new(format!("ClefdStandIn_{name}")).expect("a C string");
    // SAFETY: `parent` is a registered, loaded GObject type; the derived type has its
    // parent's class and instance sizes and no initialisers of its own, so GObject sets up
    // its class and instances exactly as the parent's (GstElement copies the metadata and
    // pad templates into a derived class).
    let derived = unsafe {
        let mut query = std::mem::zeroed::<gobject_ffi::GTypeQuery>();
        gobject_ffi::g_type_query(parent, &mut query);
        assert_ne!(query.type_, 0, "{real}'s type can be queried");
        let derived = gobject_ffi::g_type_register_static_simple(
            parent,
            type_name.as_ptr(),
            query.class_size,
            None,
            query.instance_size,
            None,
            0,
        );
        gst::glib::Type::from_glib(derived)
    };
    gst::Element::register(None, name, rank, derived).expect("stand-in registered");
}

/// A 320×240 Motion JPEG clip in AVI, as some IP cameras record.
fn mjpeg_clip(dir: &Path) -> PathBuf {
    let out = dir.join("mjpeg.avi");
    common::encode::run_to_eos(
        &format!(
            "videotestsrc num-buffers=10 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! jpegenc \
             ! avimux ! filesink location={}",
            out.display()
        ),
        30,
    );
    out
}

/// A 320×240 H.264 clip in `profile`.
fn h264_clip(dir: &Path, profile: &str) -> PathBuf {
    let out = dir.join(format!("{profile}.mp4"));
    common::encode::run_to_eos(
        &format!(
            "videotestsrc num-buffers=10 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1,format=I420 \
             ! x264enc speed-preset=veryfast ! video/x-h264,profile={profile} ! h264parse ! mp4mux ! filesink \
             location={}",
            out.display()
        ),
        30,
    );
    out
}

/// What a file camera with `choice` made of `clip`: frames delivered (each checked to be
/// at the working size), the decoder it reported, and its pipeline.
fn play(clip: &Path, choice: DecoderChoice) -> (u64, String, String) {
    let opts = common::file_camera(&format!("{choice:?}"), clip, 320, choice);
    let frames = Arc::new(AtomicU64::new(0));
    let counted = frames.clone();
    let (end_tx, end_rx) = mpsc::channel();
    let camera = Camera::start(
        opts,
        move |f| {
            assert_eq!((f.width, f.height), (320, 240));
            counted.fetch_add(1, Ordering::Relaxed);
        },
        move |ended| {
            let _ = end_tx.send(ended);
        },
    )
    .expect("camera starts");
    let ended = end_rx.recv_timeout(Duration::from_secs(60)).expect("the clip ends");
    let (decoder, description) = (camera.decoder().unwrap_or_default(), camera.description().to_string());
    camera.stop();
    assert_eq!(ended, Ended::Eos, "{clip:?} under {choice:?} ({decoder}): {description}");
    (frames.load(Ordering::Relaxed), decoder, description)
}

#[test]
fn mjpeg_in_a_file_on_thor_reaches_nvjpegdec_never_nvv4l2decoder() {
    thor();
    let dir = tempfile::tempdir().unwrap();
    let clip = mjpeg_clip(dir.path());
    for choice in [DecoderChoice::Auto, DecoderChoice::Libav] {
        let (frames, decoder, description) = play(&clip, choice);
        assert_eq!(decoder, "nvjpegdec", "{choice:?}: {description}");
        assert_eq!(frames, 10, "every picture decoded");
        assert!(description.starts_with("filesrc name=src ! decodebin name=dec ! nvvidconv"), "{description}");
        assert!(!description.contains("nvv4l2decoder"), "{description}");
    }
    // H.264 on Thor still gets the hardware decoder.
    let (frames, decoder, _) = play(&h264_clip(dir.path(), "high"), DecoderChoice::Auto);
    assert_eq!((frames, decoder.as_str()), (10, "nvh264dec"));
}

#[test]
fn software_keeps_to_the_cpu_where_hardware_decoders_rank_first() {
    thor();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (mjpeg_clip(dir.path()), "jpegdec"),
        (h264_clip(dir.path(), "constrained-baseline"), "openh264dec"),
        (h264_clip(dir.path(), "high"), "avdec_h264"),
    ];
    for (clip, expected) in cases {
        let (frames, decoder, description) = play(&clip, DecoderChoice::Software);
        assert_eq!(decoder, expected, "{clip:?}: {description}");
        assert_eq!(frames, 10, "{clip:?}: every picture decoded");
        assert!(
            !description.split_whitespace().any(|word| word.starts_with("nv")),
            "no NVIDIA element in {description}"
        );
    }
}
