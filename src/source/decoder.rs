//! Which video decoder a camera gets: NVIDIA's hardware decoders where installed (and
//! the copy out of device memory they need), else OpenH264 or libav, and the log line
//! that says which.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

/// Which software H.264 decoder a camera uses when no hardware decoder is installed.
///
/// libav (FFmpeg) is the fastest software decoder, but loading it maps FFmpeg and all it
/// links (x265, librsvg, flite, Vulkan, ...): about 35 MB of resident memory for one
/// decoder. OpenH264 decodes the H.264 profiles cameras send (up to High, progressive)
/// in under 1 MB, at about half libav's speed on High profile — a few percent of a core
/// for a 640×480 camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderChoice {
    /// NVIDIA's hardware decoder when installed; otherwise OpenH264 for the profiles it
    /// declares (up to High; `decodebin` checks the stream's caps), libav for the rest
    /// (High 4:4:4, 10-bit, H.265, ...). On damaged data OpenH264 drops the frames it
    /// cannot decode where libav conceals the damage: nothing smeared reaches the models.
    #[default]
    Auto,
    /// libav for every stream (hardware decoders still win when installed).
    Libav,
}

impl DecoderChoice {
    /// Parses a config value (`auto` or `libav`).
    pub fn parse(s: &str) -> Option<DecoderChoice> {
        match s {
            "auto" => Some(DecoderChoice::Auto),
            "libav" => Some(DecoderChoice::Libav),
            _ => None,
        }
    }
}

/// What follows `decodebin` on a Jetson: NVIDIA's decoders (`nvv4l2decoder`, and `nvjpegdec`
/// for MJPEG) put frames in device memory (`memory:NVMM`), which `videoscale` and
/// `videoconvert` cannot read; `nvvidconv` copies them out with the VIC engine (and passes
/// frames a software decoder made in system memory through just as well).
pub(super) fn from_device_memory() -> &'static str {
    if gst::ElementFactory::find("nvvidconv").is_some() { " ! nvvidconv ! video/x-raw,format=BGRx" } else { "" }
}

/// Logs which video decoder `decodebin` picked (NVIDIA's hardware decoders rank above the
/// software ones when they are installed), limits a software decoder's threads, and
/// returns where the decoder's name will be recorded.
pub(super) fn watch_decoder(pipeline: &gst::Pipeline, camera: &str, threads: u32) -> Arc<Mutex<Option<String>>> {
    let camera = camera.to_string();
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

/// Has a `libav` camera's `decodebin` pass over OpenH264.
pub(super) fn skip_lean_h264_decoder(pipeline: &gst::Pipeline) {
    let Some(dec) = pipeline.by_name("dec") else { return };
    // The enum is registered by the playback plugin, loaded by now (decodebin exists).
    let Some(answers) = gst::glib::Type::from_name("GstAutoplugSelectResult") else { return };
    dec.connect("autoplug-select", false, move |args| {
        let factory = args.get(3).and_then(|v| v.get::<gst::ElementFactory>().ok());
        let skip = factory.is_some_and(|f| f.name() == "openh264dec");
        gst::glib::EnumClass::with_type(answers).and_then(|a| a.to_value_by_nick(if skip { "skip" } else { "try" }))
    });
}
