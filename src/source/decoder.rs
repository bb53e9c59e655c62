//! Which video decoder a camera gets: NVIDIA's hardware decoders where installed (and
//! the copy out of device memory they need), else OpenH264 or libav, and the log line
//! that says which.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

pub use crate::config::DecoderChoice;
use crate::config::SourceSpec;
use crate::jetson::VideoPlatform;

/// How a file's or an RTSP camera's encoded stream is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamDecoding {
    /// Xavier and Orin: `parsebin ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=I420,…`,
    /// spelled out. `parsebin` demuxes (or depayloads) and always inserts the parser, which
    /// hands `nvv4l2decoder` the byte-stream, access-unit-aligned H.264/H.265 it needs;
    /// `decodebin` may skip the parser and exposes device-memory (`memory:NVMM`) caps that
    /// an appsink cannot take. `nvvidconv` copies frames out of device memory with the VIC
    /// engine, converting to I420 and scaling to the working `width` on the way, so the
    /// CPU touches no pixel.
    JetsonChain,
    /// `decodebin` picks the decoder per stream, passing over those [`passes_over`] names
    /// (on Thor, `nvv4l2decoder` for JPEG), with `nvvidconv` after it where installed.
    /// Thor gets this rather than the Jetson chain: only once a stream's caps are known can
    /// its MJPEG be kept from `nvv4l2decoder`, which cannot decode it there.
    Decodebin,
    /// `decoder = "software"`: `decodebin` with the CPU's decoders only, nothing after it.
    Software,
}

/// How a file or RTSP camera with `choice` decodes on `platform`, given which elements
/// are installed (`has`).
pub fn stream_decoding(choice: DecoderChoice, platform: VideoPlatform, has: &dyn Fn(&str) -> bool) -> StreamDecoding {
    match choice {
        DecoderChoice::Software => StreamDecoding::Software,
        _ if platform == VideoPlatform::Thor => StreamDecoding::Decodebin,
        _ if ["nvv4l2decoder", "nvvidconv", "parsebin"].iter().all(|name| has(name)) => StreamDecoding::JetsonChain,
        _ => StreamDecoding::Decodebin,
    }
}

/// Whether GStreamer has an element factory of this name (on this machine).
fn installed(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// The chain that turns a file's or RTSP camera's encoded video into frames for the
/// scaler (see [`StreamDecoding`]). Where only `nvvidconv` exists (NVIDIA's decoders under
/// other names) it still follows `decodebin`.
pub(super) fn decode_chain(width: u32, choice: DecoderChoice) -> String {
    match stream_decoding(choice, VideoPlatform::current(), &installed) {
        StreamDecoding::JetsonChain => {
            format!("parsebin name=dec ! nvv4l2decoder name={HARDWARE_DECODER_NAME}{}", from_device_memory(width))
        }
        StreamDecoding::Decodebin => format!("decodebin name=dec{}", from_device_memory(width)),
        StreamDecoding::Software => "decodebin name=dec".into(),
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
    if installed("nvvidconv") {
        format!(
            " ! nvvidconv name={} ! video/x-raw,format=I420,width={width},pixel-aspect-ratio=1/1",
            super::stamp::SCALER_NAME
        )
    } else {
        String::new()
    }
}

/// What follows a decoder chosen under `choice`: [`from_device_memory`], except under
/// `software`, whose decoders leave frames in system memory (and whose point is to keep
/// NVIDIA's elements out).
pub(super) fn after_decoder(width: u32, choice: DecoderChoice) -> String {
    if choice == DecoderChoice::Software { String::new() } else { from_device_memory(width) }
}

/// Logs which video (or MJPEG) decoder `decodebin` picked (NVIDIA's hardware decoders rank
/// above the software ones when they are installed), limits a software decoder's threads, and
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
            if klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image")) {
                let name = factory.name();
                let path = if is_hardware_decoder(&name, klass) { "hardware" } else { "software" };
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
/// [`mjpeg_decoder`] picks (`jpegdec` under `software`), and for NVIDIA's the copy out of
/// device memory after it.
pub(super) fn mjpeg_chain(width: u32, choice: DecoderChoice) -> String {
    if choice == DecoderChoice::Software {
        return "jpegdec".into();
    }
    match mjpeg_decoder(VideoPlatform::current(), &installed) {
        "nvjpegdec" => format!("nvjpegdec{}", from_device_memory(width)),
        other => other.to_string(),
    }
}

/// Whether a decoder factory is a hardware one: GStreamer's `Hardware` class, or by name
/// NVIDIA's (`nv…`), V4L2 codecs (`v4l2…`), VA-API's (`va…`, `vaapi…`) and Intel's
/// (`msdk…`, `qsv…`), whose classes do not all say so. Not a decoder: `false`.
pub fn is_hardware_decoder(factory: &str, klass: &str) -> bool {
    klass.contains("Decoder")
        && (klass.contains("Hardware")
            || factory.contains("v4l2")
            || ["nv", "va", "msdk", "qsv"].iter().any(|prefix| factory.starts_with(prefix)))
}

/// An element `decodebin` offers to plug for a stream: its factory's name and class, and
/// the stream's caps.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Factory name (`nvv4l2decoder`, `openh264dec`, `jpegparse`, ...).
    pub factory: &'a str,
    /// Factory class (`Codec/Decoder/Video`, ...).
    pub klass: &'a str,
    /// The caps of the stream it would take.
    pub caps: Option<&'a gst::CapsRef>,
}

/// Whether `decodebin` should pass over `candidate` for a camera with `choice` on
/// `platform`, given which elements are installed (`has`), leaving the next by rank:
/// - `software`: every hardware decoder ([`is_hardware_decoder`]);
/// - on Thor, for JPEG: every decoder but [`mjpeg_decoder`]'s (Thor's `nvv4l2decoder`
///   still offers JPEG caps but cannot decode MJPEG);
/// - OpenH264 where [`skips_lean_decoder`] says so (under `auto` and `software` only
///   where libav is installed to take the stream instead);
/// - under `software`, libav's H.264 decoder for a stream OpenH264 should take, where it
///   is installed (with a hardware decoder installed, OpenH264 keeps its low rank).
///
/// Parsers, demuxers and depayloaders are never passed over.
pub fn passes_over(
    choice: DecoderChoice,
    platform: VideoPlatform,
    candidate: Candidate<'_>,
    has: &dyn Fn(&str) -> bool,
) -> bool {
    if !candidate.klass.contains("Decoder") {
        return false;
    }
    if choice == DecoderChoice::Software && is_hardware_decoder(candidate.factory, candidate.klass) {
        return true;
    }
    let jpeg = candidate.caps.and_then(|c| c.structure(0)).is_some_and(|s| s.name() == "image/jpeg");
    if jpeg && platform == VideoPlatform::Thor && choice != DecoderChoice::Software {
        return candidate.factory != mjpeg_decoder(platform, has);
    }
    let lean = !skips_lean_decoder(choice, candidate.caps);
    match candidate.factory {
        "openh264dec" => !lean && (choice == DecoderChoice::Libav || has("avdec_h264")),
        "avdec_h264" => choice == DecoderChoice::Software && lean && has("openh264dec"),
        _ => false,
    }
}

/// Has the `decodebin` named `dec` pass over the decoders [`passes_over`] names for this
/// camera. Nothing to steer in the Jetson chain (its decoder is placed, not picked).
/// Other handlers of the signal still run for the choices this one leaves to them.
pub(super) fn steer_decoders(pipeline: &gst::Pipeline, choice: DecoderChoice) {
    if pipeline.by_name(HARDWARE_DECODER_NAME).is_some() {
        return;
    }
    let Some(dec) = pipeline.by_name("dec") else { return };
    // The enum is registered by the playback plugin, loaded by now (decodebin exists).
    let Some(answers) = gst::glib::Type::from_name("GstAutoplugSelectResult") else { return };
    let platform = VideoPlatform::current();
    dec.connect("autoplug-select", false, move |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let factory = args.get(3).and_then(|v| v.get::<gst::ElementFactory>().ok());
        let pass = factory.is_some_and(|f| {
            let (name, klass) = (f.name(), f.metadata("klass").unwrap_or_default());
            let candidate = Candidate { factory: name.as_str(), klass, caps: caps.as_ref().map(|c| c.as_ref()) };
            passes_over(choice, platform, candidate, &installed)
        });
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

/// The first of `names` that is installed (`has`), in the order given.
fn first_installed<'a>(names: &[&'a str], has: &dyn Fn(&str) -> bool) -> Option<&'a str> {
    names.iter().copied().find(|name| has(name))
}

/// What doctor adds on Thor, where every stream `decodebin` decodes goes into `nvvidconv`:
/// that this is unverified for a CPU decoder's frames, and what to do if it fails.
const THOR_CPU_NOTE: &str = "; a stream decoded on the CPU (no hardware decoder for it) goes into nvvidconv \
                             in system memory, unverified on Thor: if it fails \"not-negotiated\", set \
                             decoder = \"software\"";

/// A decoder installed here that takes JPEG: `decodebin` picks MJPEG's decoder among
/// these by rank (on a Jetson before Thor, `nvv4l2decoder` ranks above `jpegdec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegDecoder {
    /// Factory name (`nvv4l2decoder`, `nvjpegdec`, `jpegdec`, ...).
    pub factory: String,
    /// Factory class (`Codec/Decoder/Image`, ...).
    pub klass: String,
    /// Its rank, as `decodebin` sorts by it.
    pub rank: i32,
}

/// The decoders installed here that take JPEG and that `decodebin` considers (rank
/// marginal or above), for [`planned_decoder`]. Needs GStreamer initialised.
pub fn installed_jpeg_decoders() -> Vec<JpegDecoder> {
    let jpeg = gst::Caps::builder("image/jpeg").build();
    gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
        .into_iter()
        .filter(|f| f.can_sink_any_caps(&jpeg))
        .map(|f| JpegDecoder {
            factory: f.name().to_string(),
            klass: f.metadata("klass").unwrap_or_default().to_string(),
            rank: i32::from(f.rank()),
        })
        .collect()
}

/// The decoder `decodebin` plugs for MJPEG with `choice` on `platform`: the highest-ranked
/// of `jpeg` installed (`has`; ties by name, as GStreamer sorts) that [`passes_over`] leaves. Needs
/// GStreamer initialised.
fn decodebin_jpeg_decoder(
    choice: DecoderChoice,
    platform: VideoPlatform,
    jpeg: &[JpegDecoder],
    has: &dyn Fn(&str) -> bool,
) -> String {
    let caps = gst::Caps::builder("image/jpeg").build();
    let mut left: Vec<&JpegDecoder> = (jpeg.iter())
        .filter(|d| has(&d.factory))
        .filter(|d| {
            let candidate = Candidate { factory: &d.factory, klass: &d.klass, caps: Some(caps.as_ref()) };
            !passes_over(choice, platform, candidate, has)
        })
        .collect();
    left.sort_by(|a, b| b.rank.cmp(&a.rank).then_with(|| a.factory.cmp(&b.factory)));
    left.first().map_or_else(|| "none installed (gstreamer1.0-plugins-good has jpegdec)".into(), |d| d.factory.clone())
}

/// In words, the decoder(s) a camera reading `spec` with `choice` will get on `platform`,
/// given which elements are installed (`has`) and which of them take JPEG (`jpeg`, see
/// [`installed_jpeg_decoders`]): what `clefd doctor` prints per camera, so a user sees
/// before starting whether a hardware decoder is in the way. Needs GStreamer initialised.
pub fn planned_decoder(
    spec: &SourceSpec,
    choice: DecoderChoice,
    platform: VideoPlatform,
    has: &dyn Fn(&str) -> bool,
    jpeg: &[JpegDecoder],
) -> String {
    // HTTP MJPEG places its decoder; V4L2, files and RTSP leave it to `decodebin`.
    let placed = match choice {
        DecoderChoice::Software => "jpegdec",
        _ => mjpeg_decoder(platform, has),
    };
    let picked = || decodebin_jpeg_decoder(choice, platform, jpeg, has);
    let h264 = || match (choice, has("openh264dec"), has("avdec_h264")) {
        (DecoderChoice::Libav, _, true) | (_, false, true) => "avdec_h264".to_string(),
        (DecoderChoice::Libav, _, false) => "avdec_h264, which is not installed (gstreamer1.0-libav)".to_string(),
        (_, true, true) => "openh264dec for Baseline profile, avdec_h264 for the rest".to_string(),
        (_, true, false) => "openh264dec".to_string(),
        (_, false, false) => "no software decoder installed (gstreamer1.0-libav)".to_string(),
    };
    match spec {
        SourceSpec::Test { .. } => "none (synthetic frames)".into(),
        SourceSpec::Csi { .. } => "none (Argus gives raw frames; nvvidconv copies them out of device memory)".into(),
        SourceSpec::HttpMjpeg { .. } => format!("MJPEG: {placed}"),
        SourceSpec::V4l2 { .. } => format!("MJPEG: {}; raw frames: none", picked()),
        SourceSpec::File { .. } | SourceSpec::Rtsp { .. } => match stream_decoding(choice, platform, has) {
            StreamDecoding::JetsonChain => "nvv4l2decoder (parsebin ! nvv4l2decoder ! nvvidconv)".into(),
            StreamDecoding::Software => format!("H.264: {} (software only); MJPEG: {}", h264(), picked()),
            StreamDecoding::Decodebin => {
                let h264 = first_installed(&HARDWARE_H264_DECODERS, has).map_or_else(h264, str::to_string);
                // Unverified (README): Thor's nvvidconv taking a CPU decoder's frames.
                let thor = if platform == VideoPlatform::Thor && has("nvvidconv") { THOR_CPU_NOTE } else { "" };
                format!("H.264: {h264}; MJPEG: {}{thor}", picked())
            }
        },
    }
}

/// Ranks OpenH264 just above libav's H.264 decoder, once per process, so that `decodebin`
/// picks it for the streams it accepts (see [`DecoderChoice`]). Where a hardware decoder
/// is installed the ranks are left as the platform ships them: hardware stays first.
pub(super) fn rank_lean_h264_decoder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if first_installed(&HARDWARE_H264_DECODERS, &installed).is_some() {
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
/// caps: always for `libav`; for `auto` and `software`, unless the stream is Baseline profile and within
/// OpenH264's largest picture (a stream whose profile or size is not known yet keeps
/// OpenH264, which handles every profile).
pub(super) fn skips_lean_decoder(choice: DecoderChoice, caps: Option<&gst::CapsRef>) -> bool {
    match choice {
        DecoderChoice::Libav => true,
        DecoderChoice::Auto | DecoderChoice::Software => {
            let s = caps.and_then(|c| c.structure(0));
            let profile = s.and_then(|s| s.get::<String>("profile").ok());
            let heavy = profile.is_some_and(|p| !matches!(p.as_str(), "baseline" | "constrained-baseline"));
            let dim = |k: &str| s.and_then(|s| s.get::<i32>(k).ok()).map_or(0, |v| (i64::from(v) + 15) / 16);
            heavy || dim("width") * dim("height") > OPENH264_MAX_MACROBLOCKS
        }
    }
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
        // CSI: Argus wherever it is installed; without it, each platform says what to do.
        for p in [jp5, jp6, thor] {
            assert_eq!(csi_source(p, &nvidia), Ok("nvarguscamerasrc"), "{p:?}");
        }
        assert!(csi_source(thor, &bare).unwrap_err().contains("SIPL"));
        assert!(csi_source(jp6, &bare).unwrap_err().contains("part of JetPack"));
        assert!(csi_source(VideoPlatform::Generic, &bare).unwrap_err().contains("no /etc/nv_tegra_release"));
    }

    /// Every element NVIDIA's JetPack 7 brings, and the CPU's.
    fn everything(name: &str) -> bool {
        ["nvv4l2decoder", "nvvidconv", "nvjpegdec", "parsebin", "jpegdec", "openh264dec", "avdec_h264"].contains(&name)
    }

    /// A factory with this class, offered for a stream of `media` caps.
    fn offered<'a>(factory: &'a str, klass: &'a str, caps: &'a gst::Caps) -> Candidate<'a> {
        Candidate { factory, klass, caps: Some(caps.as_ref()) }
    }

    #[test]
    fn software_never_gets_a_hardware_decoder_nor_nvvidconv() {
        gst::init().unwrap();
        let thor = VideoPlatform::Thor;
        for p in [VideoPlatform::Generic, VideoPlatform::Jetson, thor] {
            assert_eq!(stream_decoding(DecoderChoice::Software, p, &everything), StreamDecoding::Software, "{p:?}");
        }
        let h264 = gst::Caps::builder("video/x-h264").field("profile", "high").build();
        let baseline = gst::Caps::builder("video/x-h264").field("profile", "constrained-baseline").build();
        let jpeg = gst::Caps::builder("image/jpeg").build();
        let software = |c: Candidate<'_>, p| passes_over(DecoderChoice::Software, p, c, &everything);
        for (factory, klass) in [
            ("nvv4l2decoder", "Codec/Decoder/Video"),
            ("nvh264dec", "Codec/Decoder/Video/Hardware"),
            ("vah264dec", "Codec/Decoder/Video/Hardware"),
            ("vaapih264dec", "Codec/Decoder/Video"),
            ("v4l2slh264dec", "Codec/Decoder/Video/Hardware"),
            ("somevendorh264dec", "Codec/Decoder/Video/Hardware"),
        ] {
            for p in [VideoPlatform::Generic, VideoPlatform::Jetson, thor] {
                assert!(software(offered(factory, klass, &h264), p), "{factory} on {p:?}");
            }
        }
        assert!(software(offered("nvjpegdec", "Codec/Decoder/Image", &jpeg), thor));
        assert!(software(offered("nvv4l2decoder", "Codec/Decoder/Video", &jpeg), thor));
        // The CPU's decoders, by the auto rules; parsers always.
        assert!(!software(offered("jpegdec", "Codec/Decoder/Image", &jpeg), thor), "jpegdec on Thor");
        assert!(!software(offered("avdec_h264", "Codec/Decoder/Video", &h264), thor), "libav for High");
        assert!(software(offered("openh264dec", "Codec/Decoder/Video", &h264), thor), "not OpenH264 for High");
        assert!(!software(offered("openh264dec", "Codec/Decoder/Video", &baseline), thor), "OpenH264 for Baseline");
        assert!(software(offered("avdec_h264", "Codec/Decoder/Video", &baseline), thor), "whatever the ranks");
        let no_lean = |name: &str| everything(name) && name != "openh264dec";
        let only_libav = offered("avdec_h264", "Codec/Decoder/Video", &baseline);
        assert!(!passes_over(DecoderChoice::Software, thor, only_libav, &no_lean), "libav without OpenH264");
        assert!(!software(offered("h264parse", "Codec/Parser/Converter/Video", &h264), thor));
        // The other choices keep the hardware decoders.
        for choice in [DecoderChoice::Auto, DecoderChoice::Libav] {
            let nv = offered("nvv4l2decoder", "Codec/Decoder/Video", &h264);
            assert!(!passes_over(choice, VideoPlatform::Jetson, nv, &everything), "{choice:?}");
        }
    }

    #[test]
    fn mjpeg_in_a_file_or_rtsp_stream_on_thor_never_reaches_nvv4l2decoder() {
        gst::init().unwrap();
        let (thor, orin) = (VideoPlatform::Thor, VideoPlatform::Jetson);
        // Thor picks per stream (decodebin); Xavier and Orin keep the explicit chain.
        assert_eq!(stream_decoding(DecoderChoice::Auto, thor, &everything), StreamDecoding::Decodebin);
        assert_eq!(stream_decoding(DecoderChoice::Auto, orin, &everything), StreamDecoding::JetsonChain);
        assert_eq!(stream_decoding(DecoderChoice::Libav, orin, &everything), StreamDecoding::JetsonChain);
        assert_eq!(stream_decoding(DecoderChoice::Auto, orin, &|n| n == "parsebin"), StreamDecoding::Decodebin);
        let jpeg = gst::Caps::builder("image/jpeg").field("parsed", true).build();
        let h264 = gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").build();
        let auto = |c: Candidate<'_>, p, has: &dyn Fn(&str) -> bool| passes_over(DecoderChoice::Auto, p, c, has);
        let nv_jpeg = offered("nvv4l2decoder", "Codec/Decoder/Video", &jpeg);
        let nvjpegdec = offered("nvjpegdec", "Codec/Decoder/Image", &jpeg);
        let jpegdec = offered("jpegdec", "Codec/Decoder/Image", &jpeg);
        let libav_jpeg = offered("avdec_mjpeg", "Codec/Decoder/Video", &jpeg);
        // With nvJPEG installed: nvjpegdec, and nothing else.
        assert!(auto(nv_jpeg, thor, &everything));
        assert!(!auto(nvjpegdec, thor, &everything));
        assert!(auto(jpegdec, thor, &everything) && auto(libav_jpeg, thor, &everything));
        // Without it (or without nvvidconv to copy its frames out): jpegdec.
        let no_nvjpeg = |name: &str| everything(name) && name != "nvjpegdec";
        assert!(auto(nv_jpeg, thor, &no_nvjpeg) && !auto(jpegdec, thor, &no_nvjpeg));
        // H.264 and H.265 keep nvv4l2decoder on Thor; MJPEG keeps it before Thor.
        assert!(!auto(offered("nvv4l2decoder", "Codec/Decoder/Video", &h264), thor, &everything));
        assert!(!auto(nv_jpeg, orin, &everything) && !auto(jpegdec, orin, &everything));
        assert!(!auto(offered("jpegparse", "Codec/Parser/Image", &jpeg), thor, &everything), "parsers stay");
    }

    fn jpeg_decoder(factory: &str, klass: &str, rank: i32) -> JpegDecoder {
        JpegDecoder { factory: factory.into(), klass: klass.into(), rank }
    }

    /// V4L2 MJPEG goes through `decodebin`, which picks by rank: on Orin and Xavier that
    /// is `nvv4l2decoder`, not the `jpegdec` an HTTP camera gets, and doctor says so.
    #[test]
    fn doctor_names_the_jpeg_decoder_decodebin_picks_for_v4l2() {
        gst::init().unwrap();
        let v4l2 = SourceSpec::V4l2 { device: "/dev/video0".into(), capture: Default::default() };
        let jetson = [
            jpeg_decoder("jpegdec", "Codec/Decoder/Image", 256),
            jpeg_decoder("nvjpegdec", "Codec/Decoder/Image", 256),
            jpeg_decoder("nvv4l2decoder", "Codec/Decoder/Video", 256 + 11),
        ];
        let plan = |choice, p, jpeg: &[JpegDecoder]| planned_decoder(&v4l2, choice, p, &everything, jpeg);
        let (orin, thor) = (VideoPlatform::Jetson, VideoPlatform::Thor);
        assert_eq!(plan(DecoderChoice::Auto, orin, &jetson), "MJPEG: nvv4l2decoder; raw frames: none");
        assert_eq!(plan(DecoderChoice::Software, orin, &jetson), "MJPEG: jpegdec; raw frames: none");
        // Thor steers JPEG away from nvv4l2decoder, to nvJPEG.
        assert_eq!(plan(DecoderChoice::Auto, thor, &jetson), "MJPEG: nvjpegdec; raw frames: none");
        // A tie in rank goes by name, as GStreamer sorts: jpegdec before nvjpegdec.
        assert_eq!(plan(DecoderChoice::Auto, orin, &jetson[..2]), "MJPEG: jpegdec; raw frames: none");
        let vaapi = [
            jpeg_decoder("jpegdec", "Codec/Decoder/Image", 256),
            jpeg_decoder("vajpegdec", "Codec/Decoder/Image/Hardware", 257),
        ];
        let intel = |name: &str| name == "jpegdec" || name == "vajpegdec";
        let generic = planned_decoder(&v4l2, DecoderChoice::Auto, VideoPlatform::Generic, &intel, &vaapi);
        assert_eq!(generic, "MJPEG: vajpegdec; raw frames: none");
        // Only what is installed counts.
        assert_eq!(plan(DecoderChoice::Auto, orin, &vaapi), "MJPEG: jpegdec; raw frames: none");
        assert!(plan(DecoderChoice::Auto, VideoPlatform::Generic, &[]).contains("none installed"));
        // And the list doctor reads on this machine has libjpeg's (the test image's GStreamer).
        assert!(installed_jpeg_decoders().iter().any(|d| d.factory == "jpegdec"), "{:?}", installed_jpeg_decoders());
    }

    #[test]
    fn doctor_is_told_the_decoder_each_camera_will_get() {
        let file = SourceSpec::File { path: "/clips/door.mp4".into() };
        let http = SourceSpec::HttpMjpeg { location: "http://cam/mjpeg".into() };
        let (thor, orin) = (VideoPlatform::Thor, VideoPlatform::Jetson);
        gst::init().unwrap();
        let jpeg = [
            jpeg_decoder("nvv4l2decoder", "Codec/Decoder/Video", 256 + 11),
            jpeg_decoder("nvjpegdec", "Codec/Decoder/Image", 256),
            jpeg_decoder("jpegdec", "Codec/Decoder/Image", 256),
        ];
        let plan = |spec, choice, p, has: &dyn Fn(&str) -> bool| planned_decoder(spec, choice, p, has, &jpeg);
        assert_eq!(
            plan(&file, DecoderChoice::Auto, orin, &everything),
            "nvv4l2decoder (parsebin ! nvv4l2decoder ! nvvidconv)"
        );
        assert_eq!(
            plan(&file, DecoderChoice::Auto, thor, &everything),
            format!("H.264: nvv4l2decoder; MJPEG: nvjpegdec{THOR_CPU_NOTE}")
        );
        assert!(THOR_CPU_NOTE.contains("decoder = \"software\""), "{THOR_CPU_NOTE}");
        let software = plan(&file, DecoderChoice::Software, thor, &everything);
        assert_eq!(
            software,
            "H.264: openh264dec for Baseline profile, avdec_h264 for the rest (software only); MJPEG: jpegdec"
        );
        assert_eq!(plan(&http, DecoderChoice::Software, thor, &everything), "MJPEG: jpegdec");
        assert_eq!(plan(&http, DecoderChoice::Auto, thor, &everything), "MJPEG: nvjpegdec");
        let cpu = |name: &str| ["parsebin", "jpegdec", "openh264dec", "avdec_h264"].contains(&name);
        let generic = VideoPlatform::Generic;
        assert_eq!(plan(&file, DecoderChoice::Libav, generic, &cpu), "H.264: avdec_h264; MJPEG: jpegdec");
        assert!(plan(&file, DecoderChoice::Libav, generic, &|n| n == "jpegdec").contains("not installed"));
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
