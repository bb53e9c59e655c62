//! The platform's part of `clefd doctor`: the Jetson release (L4T, JetPack, CUDA, board),
//! GStreamer and NVIDIA's elements, the GPU device nodes this process sees, and the
//! engine cache. Files are read under [`jetson::root`] so tests can play a Jetson.

use std::path::Path;

use clefd::config::SourceSpec;
use gstreamer as gst;

use super::{Verdict, line};
use clefd::jetson::{self, GPU_NODES};

/// NVIDIA's GStreamer elements clefd uses on a Jetson, and what each is for.
const NVIDIA_ELEMENTS: [(&str, &str); 3] = [
    ("nvv4l2decoder", "hardware H.264/H.265 decoding"),
    ("nvvidconv", "conversion and scaling on the VIC"),
    ("nvarguscamerasrc", "csi:// cameras"),
];

/// The oldest CUDA whose ONNX Runtime builds clefd's README covers per JetPack.
const CUDA_BY_JETPACK: [(u32, u32); 4] = [(35, 11), (36, 12), (38, 13), (39, 13)];

/// L4T, JetPack, board and CUDA, when this is a Jetson.
pub(super) fn report_jetson(verdict: &mut Verdict) {
    let root = jetson::root();
    let Some(l4t) = jetson::l4t(&root) else {
        line("Jetson", "no (no /etc/nv_tegra_release)");
        return;
    };
    line("L4T", format!("R{}.{}: {}", l4t.major, l4t.revision, l4t.jetpack()));
    line("board", jetson::board(&root).unwrap_or_else(|| "unknown (no /proc/device-tree/model)".into()));
    let cuda = jetson::cuda(&root);
    line("CUDA", cuda.clone().unwrap_or_else(|| "not found (/usr/local/cuda/version.json)".into()));
    let expected = CUDA_BY_JETPACK.iter().find(|(m, _)| *m == l4t.major).map(|(_, c)| *c);
    if let (Some(expected), Some(major)) = (expected, cuda.as_deref().and_then(jetson::cuda_major))
        && major != expected
    {
        line("  note", format!("L4T R{} comes with CUDA {expected}; this CUDA is {major}", l4t.major));
    }
    if l4t.server_style_gpu() {
        line(
            "  GPU driver",
            "server-style (/dev/nvidia*, nvidia-uvm, nvsciipc): ONNX Runtime must be built for CUDA 13 (README, JetPack 7)",
        );
    }
    line(
        "DLA compiler",
        jetson::dla_compiler(&root)
            .map_or_else(|| "absent (engine.dla_core cannot be used)".into(), |p| p.display().to_string()),
    );
    let platform = jetson::VideoPlatform::detect(&root);
    if platform == jetson::VideoPlatform::Thor {
        let has = |name: &str| gst::init().is_ok() && gst::ElementFactory::find(name).is_some();
        let mjpeg = clefd::source::mjpeg_decoder(platform, &has);
        line(
            "  MJPEG",
            format!(
                "decoded by {mjpeg} (Thor's nvv4l2decoder takes no MJPEG; nvjpegdec, when present, needs CUDA 13's \
                 libnvjpeg.so.13)"
            ),
        );
        line(
            "  csi://",
            clefd::source::csi_source(platform, &has).map_or_else(str::to_string, |s| format!("captured by {s}")),
        );
    }
    let drop_in = root.join("etc/systemd/system/clefd.service.d/jetson.conf");
    match std::fs::read_to_string(&drop_in) {
        Ok(text) if l4t.server_style_gpu() && !text.contains("DeviceAllow=/dev/nvidia-uvm rw") => {
            line("drop-in", format!("{}: from before JetPack 7", drop_in.display()));
            verdict.fail(format!(
                "{} does not allow JetPack 7's GPU nodes (/dev/nvidia-uvm, /dev/nvsciipc): copy \
                 /usr/share/clefd/systemd/jetson.conf over it and run `systemctl daemon-reload`",
                drop_in.display()
            ));
        }
        Ok(_) => line("drop-in", format!("{}: installed", drop_in.display())),
        Err(_) => line("drop-in", "not installed (the service cannot reach the GPU: README, Jetson, step 2)"),
    }
    if l4t.major <= 34 {
        verdict.fail(format!("L4T R{}: {}", l4t.major, l4t.jetpack()));
    }
}

/// GStreamer's version, NVIDIA's elements, the decoder each enabled camera will get, and
/// whether csi:// cameras can work.
pub(super) fn report_gstreamer(loaded: Option<&clefd::config::Settings>, verdict: &mut Verdict) {
    if let Err(e) = gst::init() {
        line("GStreamer", format!("cannot start: {e}"));
        verdict.fail("GStreamer cannot start: no camera can be read".into());
        return;
    }
    line("GStreamer", gst::version_string());
    for (name, what) in NVIDIA_ELEMENTS {
        let present = gst::ElementFactory::find(name).is_some();
        line(&format!("  {name}"), format!("{} ({what})", if present { "present" } else { "absent" }));
    }
    let software: Vec<&str> =
        ["openh264dec", "avdec_h264"].into_iter().filter(|n| gst::ElementFactory::find(n).is_some()).collect();
    line("  software H.264", if software.is_empty() { "none".to_string() } else { software.join(", ") });
    let has = |name: &str| gst::ElementFactory::find(name).is_some();
    let jpeg = clefd::source::installed_jpeg_decoders();
    for (name, camera) in loaded.iter().flat_map(|l| l.enabled_cameras()) {
        let platform = jetson::VideoPlatform::current();
        let plan = clefd::source::planned_decoder(&camera.source, camera.decoder, platform, &has, &jpeg);
        line(&format!("  decoder {name}"), plan);
    }
    let csi_cameras: Vec<&String> = loaded
        .map(|l| {
            (l.enabled_cameras()).filter(|(_, c)| matches!(c.source, SourceSpec::Csi { .. })).map(|(n, _)| n).collect()
        })
        .unwrap_or_default();
    if !csi_cameras.is_empty() && gst::ElementFactory::find("nvarguscamerasrc").is_none() {
        verdict.fail(format!("csi:// camera(s) {csi_cameras:?} need nvarguscamerasrc (a Jetson with JetPack)"));
    }
}

/// The GPU device nodes this process can see (a sandbox may hide them).
pub(super) fn report_devices() {
    let root = jetson::root();
    let visible: Vec<&str> = GPU_NODES.into_iter().filter(|p| root.join(p.trim_start_matches('/')).exists()).collect();
    if visible.is_empty() {
        line("GPU devices", "none visible (no /dev/nvhost-*, /dev/nvgpu, /dev/nvidia*, /dev/nvmap, /dev/dri)");
    } else {
        line("GPU devices", visible.join(", "));
    }
}

/// Where built engines are cached, and what is there.
pub(super) fn report_cache(dir: &Path) {
    let state = match std::fs::read_dir(dir) {
        Ok(entries) => format!("{} file(s)", entries.count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "empty (nothing built yet)".into(),
        Err(e) => format!("unreadable: {e}"),
    };
    line("engine cache", format!("{}: {state}", dir.display()));
}
