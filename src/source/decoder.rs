//! Which video decoder a camera gets: NVIDIA's hardware decoders where installed (and
//! the copy out of device memory they need), else OpenH264 or libav, and the log line
//! that says which.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

pub use crate::config::DecoderChoice;
use crate::jetson::VideoPlatform;

/// The chain that turns a source's encoded video into I420 frames for the scaler.
///
/// On a Jetson (`nvv4l2decoder` and `nvvidconv` installed) it is spelled out:
/// `parsebin ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=I420,…`. `parsebin` demuxes
/// (or depayloads) and always inserts the parser, which hands `nvv4l2decoder` the
/// byte-stream, access-unit-aligned H.264/H.265 it needs; `decodebin` may skip the parser and
/// exposes device-memory (`memory:NVMM`) caps that an appsink cannot take. `nvvidconv` copies
/// frames out of device memory with the VIC engine, converting to I420 and scaling to the
/// working `width` on the way, so the CPU touches no pixel.
///
/// Elsewhere `decodebin` picks a software decoder (see [`DecoderChoice`]); where only
/// `nvvidconv` exists (NVIDIA's decoders under other names) it still follows `decodebin`.
pub(super) fn decode_chain(width: u32) -> String {
    let has = |name: &str| gst::ElementFactory::find(name).is_some();
    if has("nvv4l2decoder") && has("nvvidconv") && has("parsebin") {
        format!("parsebin name=dec ! nvv4l2decoder name={HARDWARE_DECODER_NAME}{}", from_device_memory(width))
    } else {
        format!("decodebin name=dec{}", from_device_memory(width))
    }
}

/// The element name of the decoder [`decode_chain`] places itself (on a Jetson).
pub(super) const HARDWARE_DECODER_NAME: &str = "hwdec";

/// What follows a decoder that may leave frames in device memory (`nvv4l2decoder`,
/// `nvarguscamerasrc`, `nvjpegdec`): `nvvidconv` to I420 at the working width (its caps
/// fixation keeps the aspect ratio, as `videoscale`'s does), so the software scaler and
/// converter after it pass frames through. Frames a software decoder made in system memory
/// go through the VIC just as well. Nothing where `nvvidconv` is absent.
pub(super) fn from_device_memory(width: u32) -> String {
    if gst::ElementFactory::find("nvvidconv").is_some() {
        format!(
            " ! nvvidconv name={} ! video/x-raw,format=I420,width={width},pixel-aspect-ratio=1/1",
            super::stamp::SCALER_NAME
        )
    } else {
        String::new()
    }
}

/// Logs which video decoder `decodebin` picked (NVIDIA's hardware decoders rank above the
/// software ones when they are installed), limits a software decoder's threads, and
/// returns where the decoder's name will be recorded.
pub(super) fn watch_decoder(pipeline: &gst::Pipeline, camera: &str, threads: u32) -> Arc<Mutex<Option<String>>> {
    let camera = camera.to_string();
    if let Some(name) = pipeline.by_name(HARDWARE_DECODER_NAME).and_then(|e| e.factory()).map(|f| f.name()) {
        tracing::info!(camera = %camera, decoder = %name, path = "hardware", "video decoder chosen");
        return Arc::new(Mutex::new(Some(name.to_string())));
    }
    let chosen = Arc::new(Mutex::new(None));
    let record = chosen.clone();
    pipeline.connect("deep-element-added", false, move |args| {
        let element = args.get(2).and_then(|v| v.get::<gst::Element>().ok());
        if let Some(factory) = element.as_ref().and_then(|e| e.factory()) {
            let klass = factory.metadata("klass").unwrap_or_default();
            if let Some(e) = element.as_ref().filter(|e| e.find_property("max-threads").is_some()) {
                e.set_property("max-threads", i32::try_from(threads).unwrap_or(0));
            }
            if klass.contains("Decoder") && klass.contains("Video") {
                let name = factory.name();
                let path = if name.starts_with("nv") || name.contains("v4l2") { "hardware" } else { "software" };
                tracing::info!(camera = %camera, decoder = %name, path, "video decoder chosen");
                if let Ok(mut r) = record.lock() {
                    *r = Some(name.to_string());
                }
            }
        }
        None
    });
    chosen
}

/// The element that decodes an MJPEG camera's pictures on `platform`, given which
/// elements are installed (`has`). Thor's `nvv4l2decoder` decodes no MJPEG, so its JPEG
/// goes to `nvjpegdec` (nvJPEG, CUDA 13's `libnvjpeg.so.13`) where that is installed
/// together with `nvvidconv` (its frames may be in device memory, which only `nvvidconv`
/// copies out); everywhere else, and on a Thor without either, libjpeg's `jpegdec` on the CPU.
pub fn mjpeg_decoder(platform: VideoPlatform, has: &dyn Fn(&str) -> bool) -> &'static str {
    match platform {
        VideoPlatform::Thor if has("nvjpegdec") && has("nvvidconv") => "nvjpegdec",
        _ => "jpegdec",
    }
}

/// The chain after an MJPEG source (`multipartdemux` of an HTTP camera): the decoder
/// [`mjpeg_decoder`] picks, and for NVIDIA's the copy out of device memory after it.
pub(super) fn mjpeg_chain(width: u32) -> String {
    match mjpeg_decoder(VideoPlatform::current(), &|name| gst::ElementFactory::find(name).is_some()) {
        "nvjpegdec" => format!("nvjpegdec{}", from_device_memory(width)),
        other => other.to_string(),
    }
}

/// Decoders `decodebin` must pass over for JPEG pictures on `platform`: on Thor,
/// `nvv4l2decoder` still offers JPEG caps but cannot decode MJPEG.
pub fn jpeg_decoders_to_skip(platform: VideoPlatform) -> &'static [&'static str] {
    match platform {
        VideoPlatform::Thor => &["nvv4l2decoder"],
        VideoPlatform::Jetson | VideoPlatform::Generic => &[],
    }
}

/// Has the `decodebin` named `dec` pass over [`jpeg_decoders_to_skip`] for JPEG caps (a
/// V4L2 camera's MJPEG on Thor goes to `nvjpegdec` or `jpegdec` instead). Other handlers
/// of the signal still run for the choices this one leaves to them.
pub(super) fn steer_jpeg_decoder(pipeline: &gst::Pipeline) {
    let skip = jpeg_decoders_to_skip(VideoPlatform::current());
    if skip.is_empty() {
        return;
    }
    let Some(dec) = pipeline.by_name("dec") else { return };
    let Some(answers) = gst::glib::Type::from_name("GstAutoplugSelectResult") else { return };
    dec.connect("autoplug-select", false, move |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let factory = args.get(3).and_then(|v| v.get::<gst::ElementFactory>().ok());
        let jpeg = caps.as_ref().and_then(|c| c.structure(0)).is_some_and(|s| s.name() == "image/jpeg");
        let pass = jpeg && factory.is_some_and(|f| skip.contains(&f.name().as_str()));
        gst::glib::EnumClass::with_type(answers).and_then(|a| a.to_value_by_nick(if pass { "skip" } else { "try" }))
    });
}

/// How a `csi://N` camera is captured on `platform`, given which elements are installed:
/// Argus (`nvarguscamerasrc`) wherever it is, the only way clefd knows; otherwise why not,
/// in words that say what to do instead.
pub fn csi_source(platform: VideoPlatform, has: &dyn Fn(&str) -> bool) -> Result<&'static str, &'static str> {
    if has("nvarguscamerasrc") {
        return Ok("nvarguscamerasrc");
    }
    Err(match platform {
        VideoPlatform::Thor => {
            "Jetson Thor's JetPack 7 captures cameras through SIPL (GMSL, Camera over Ethernet), which has no \
             GStreamer source, and this system has no Argus (nvarguscamerasrc): serve the camera as RTSP or V4L2 \
             (v4l2:///dev/videoN) and configure that instead"
        }
        VideoPlatform::Jetson => "CSI cameras need NVIDIA's Argus GStreamer plugin (nvarguscamerasrc, part of JetPack)",
        VideoPlatform::Generic => {
            "CSI cameras need NVIDIA's Jetson GStreamer plugins (nvarguscamerasrc), and this system has no \
             /etc/nv_tegra_release (no Jetson's L4T found)"
        }
    })
}

/// Hardware H.264 decoders (Jetson, desktop NVIDIA, V4L2 stateless/stateful, VA-API).
const HARDWARE_H264_DECODERS: [&str; 6] =
    ["nvv4l2decoder", "nvh264dec", "nvh264sldec", "v4l2h264dec", "vah264dec", "vaapih264dec"];

/// Ranks OpenH264 just above libav's H.264 decoder, once per process, so that `decodebin`
/// picks it for the streams it accepts (see [`DecoderChoice`]). Where a hardware decoder
/// is installed the ranks are left as the platform ships them: hardware stays first.
pub(super) fn rank_lean_h264_decoder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if HARDWARE_H264_DECODERS.iter().any(|name| gst::ElementFactory::find(name).is_some()) {
            return;
        }
        let (Some(lean), Some(libav)) =
            (gst::ElementFactory::find("openh264dec"), gst::ElementFactory::find("avdec_h264"))
        else {
            return;
        };
        let rank = libav.rank();
        if lean.rank() <= rank {
            lean.set_rank(gst::Rank::from(i32::from(rank) + 1));
        }
    });
}

/// The largest picture OpenH264 decodes, in 16×16 macroblocks (H.264 level 5.2: 4096×2304).
/// Larger streams (8K) it refuses frame by frame, silently: they go to libav.
const OPENH264_MAX_MACROBLOCKS: i64 = 36_864;

/// Whether a camera with this choice should pass over OpenH264 for a stream with these
/// caps: always for `libav`; for `auto`, unless the stream is Baseline profile and within
/// OpenH264's largest picture (a stream whose profile or size is not known yet keeps
/// OpenH264, which handles every profile).
pub(super) fn skips_lean_decoder(choice: DecoderChoice, caps: Option<&gst::CapsRef>) -> bool {
    match choice {
        DecoderChoice::Libav => true,
        DecoderChoice::Auto => {
            let s = caps.and_then(|c| c.structure(0));
            let profile = s.and_then(|s| s.get::<String>("profile").ok());
            let heavy = profile.is_some_and(|p| !matches!(p.as_str(), "baseline" | "constrained-baseline"));
            let dim = |k: &str| s.and_then(|s| s.get::<i32>(k).ok()).map_or(0, |v| (i64::from(v) + 15) / 16);
            heavy || dim("width") * dim("height") > OPENH264_MAX_MACROBLOCKS
        }
    }
}

/// Has `decodebin` pass over OpenH264 where [`skips_lean_decoder`] says so (under `auto`,
/// only where libav is installed to take the stream instead).
pub(super) fn steer_h264_decoder(pipeline: &gst::Pipeline, choice: DecoderChoice) {
    if pipeline.by_name(HARDWARE_DECODER_NAME).is_some() {
        return;
    }
    if choice == DecoderChoice::Auto && gst::ElementFactory::find("avdec_h264").is_none() {
        return;
    }
    let Some(dec) = pipeline.by_name("dec") else { return };
    // The enum is registered by the playback plugin, loaded by now (decodebin exists).
    let Some(answers) = gst::glib::Type::from_name("GstAutoplugSelectResult") else { return };
    dec.connect("autoplug-select", false, move |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let factory = args.get(3).and_then(|v| v.get::<gst::ElementFactory>().ok());
        let skip = factory.is_some_and(|f| f.name() == "openh264dec")
            && skips_lean_decoder(choice, caps.as_ref().map(|c| c.as_ref()));
        gst::glib::EnumClass::with_type(answers).and_then(|a| a.to_value_by_nick(if skip { "skip" } else { "try" }))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform of a root laid out as a Jetson with this release line and board.
    fn platform(release: &str, board: &str) -> VideoPlatform {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
        std::fs::create_dir_all(root.path().join("proc/device-tree")).expect("mkdir");
        std::fs::write(root.path().join("etc/nv_tegra_release"), format!("# {release}, GCID: 1\n")).expect("write");
        std::fs::write(root.path().join("proc/device-tree/model"), board).expect("write");
        VideoPlatform::detect(root.path())
    }

    #[test]
    fn mjpeg_and_csi_get_the_elements_that_work_on_each_jetpack() {
        let jp5 = platform("R35 (release), REVISION: 6.0", "NVIDIA Jetson AGX Orin");
        let jp6 = platform("R36 (release), REVISION: 4.3", "NVIDIA Jetson Orin Nano");
        let thor = platform("R38 (release), REVISION: 2.0", "NVIDIA Jetson AGX Thor Developer Kit");
        assert_eq!((jp5, jp6, thor), (VideoPlatform::Jetson, VideoPlatform::Jetson, VideoPlatform::Thor));
        let nvidia =
            |name: &str| ["nvjpegdec", "nvv4l2decoder", "nvvidconv", "nvarguscamerasrc", "jpegdec"].contains(&name);
        let bare = |name: &str| name == "jpegdec";
        // nvJPEG's device-memory frames need nvvidconv to reach the software scaler.
        let no_vidconv = |name: &str| nvidia(name) && name != "nvvidconv";
        // MJPEG: nvJPEG on Thor where installed, else libjpeg; JetPack 5 and 6 keep libjpeg.
        assert_eq!(mjpeg_decoder(thor, &nvidia), "nvjpegdec");
        assert_eq!(mjpeg_decoder(thor, &no_vidconv), "jpegdec");
        assert_eq!(mjpeg_decoder(thor, &bare), "jpegdec");
        for p in [jp5, jp6, VideoPlatform::Generic] {
            assert_eq!(mjpeg_decoder(p, &nvidia), "jpegdec", "{p:?}");
        }
        // decodebin passes over nvv4l2decoder for JPEG on Thor only.
        assert_eq!(jpeg_decoders_to_skip(thor), &["nvv4l2decoder"]);
        assert!(jpeg_decoders_to_skip(jp5).is_empty() && jpeg_decoders_to_skip(jp6).is_empty());
        // CSI: Argus wherever it is installed; without it, each platform says what to do.
        for p in [jp5, jp6, thor] {
            assert_eq!(csi_source(p, &nvidia), Ok("nvarguscamerasrc"), "{p:?}");
        }
        assert!(csi_source(thor, &bare).unwrap_err().contains("SIPL"));
        assert!(csi_source(jp6, &bare).unwrap_err().contains("part of JetPack"));
        assert!(csi_source(VideoPlatform::Generic, &bare).unwrap_err().contains("no /etc/nv_tegra_release"));
    }

    #[test]
    fn auto_keeps_openh264_for_baseline_only() {
        gst::init().unwrap();
        let caps = |profile: &str| gst::Caps::builder("video/x-h264").field("profile", profile).build();
        for lean in ["baseline", "constrained-baseline"] {
            assert!(!skips_lean_decoder(DecoderChoice::Auto, Some(caps(lean).as_ref())), "{lean}");
            assert!(skips_lean_decoder(DecoderChoice::Libav, Some(caps(lean).as_ref())), "{lean}");
        }
        for heavy in ["main", "high", "high-4:4:4"] {
            assert!(skips_lean_decoder(DecoderChoice::Auto, Some(caps(heavy).as_ref())), "{heavy}");
        }
        let unknown = gst::Caps::builder("video/x-h264").build();
        assert!(!skips_lean_decoder(DecoderChoice::Auto, Some(unknown.as_ref())));
        let sized = |w: i32, h: i32| {
            gst::Caps::builder("video/x-h264").field("profile", "baseline").field("width", w).field("height", h).build()
        };
        assert!(!skips_lean_decoder(DecoderChoice::Auto, Some(sized(3840, 2160).as_ref())), "4K stays lean");
        assert!(skips_lean_decoder(DecoderChoice::Auto, Some(sized(7680, 4320).as_ref())), "8K goes to libav");
        assert!(!skips_lean_decoder(DecoderChoice::Auto, None));
    }
}
