//! `clefd doctor`: one screen a user can paste into a bug report. What clefd, ONNX Runtime
//! and GStreamer are, which execution provider each bundle would get and why, which of
//! NVIDIA's GStreamer elements and GPU device nodes this process can see, the engine
//! cache, and the config checked. It exits non-zero when something the config asks for
//! cannot work, so it also serves as a pre-flight check in scripts.

use std::path::Path;
use std::process::ExitCode;

use clefd::config::SourceSpec;
use clefd::engine::runtime::{self, SessionOptions};
use gstreamer as gst;

/// The oldest ONNX Runtime this build loads (the `ort` crate's `api-18` feature): JetPack
/// 5's ONNX Runtime GPU builds stop at 1.18.
pub const ORT_API_FLOOR: &str = "1.18";

/// NVIDIA's GStreamer elements clefd uses on a Jetson, and what each is for.
const NVIDIA_ELEMENTS: [(&str, &str); 3] = [
    ("nvv4l2decoder", "hardware H.264/H.265 decoding"),
    ("nvvidconv", "conversion and scaling on the VIC"),
    ("nvarguscamerasrc", "csi:// cameras"),
];

/// Device nodes through which the GPU is reached (JetPack 5 and 6, desktop NVIDIA, DRM).
const GPU_NODES: [&str; 6] =
    ["/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl", "/dev/nvidia0", "/dev/nvidiactl", "/dev/nvmap", "/dev/dri"];

/// What the report found wrong: each line says what cannot work and what to do.
#[derive(Default)]
struct Verdict {
    problems: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, what: String) {
        self.problems.push(what);
    }
}

fn line(key: &str, value: impl std::fmt::Display) {
    println!("{key:<18} {value}");
}

/// `clefd doctor`.
pub fn doctor(config: &Path) -> anyhow::Result<ExitCode> {
    let mut verdict = Verdict::default();
    println!("clefd doctor");
    line("clefd", format!("{} ({})", env!("CARGO_PKG_VERSION"), std::env::current_exe()?.display()));
    let loaded = match super::options::load_config(config) {
        Ok(l) => {
            let n = l.enabled_cameras().count();
            line("config", format!("{}: valid, {n} camera(s) enabled", config.display()));
            Some(l)
        }
        Err(errors) => {
            line("config", format!("{}: {} problem(s)", config.display(), errors.0.len()));
            for p in &errors.0 {
                println!("  {p}");
            }
            verdict
                .fail(format!("the configuration is invalid: run `clefd check-config --config {}`", config.display()));
            None
        }
    };
    let providers = loaded
        .as_ref()
        .map_or_else(clefd::config::default_providers, |l| l.engine.providers.clone())
        .iter()
        .map(|p| p.as_str().to_string())
        .collect::<Vec<_>>();
    match runtime::init(loaded.as_ref().and_then(|l| l.engine.onnxruntime.as_deref())) {
        Ok(path) => {
            line(
                "ONNX Runtime",
                format!(
                    "{} at {} (clefd needs {ORT_API_FLOOR} or newer)",
                    runtime::version().unwrap_or_else(|| "unknown version".into()),
                    path.display()
                ),
            );
            report_providers(&providers, &mut verdict);
            if let Some(l) = &loaded {
                report_bundles(l, &providers, &mut verdict);
            }
        }
        Err(e) => {
            line("ONNX Runtime", format!("cannot be loaded: {e}"));
            verdict.fail("ONNX Runtime cannot be loaded: no model can run".into());
        }
    }
    report_gstreamer(loaded.as_ref(), &mut verdict);
    report_devices();
    if let Some(l) = &loaded {
        report_cache(l);
    }
    if verdict.problems.is_empty() {
        line("verdict", "ok: everything the configuration asks for can work");
        return Ok(ExitCode::SUCCESS);
    }
    line("verdict", format!("{} thing(s) cannot work:", verdict.problems.len()));
    for p in &verdict.problems {
        println!("  - {p}");
    }
    Ok(ExitCode::from(if loaded.is_none() { super::EXIT_CONFIG } else { 1 }))
}

/// Each provider asked for: in this build of ONNX Runtime or not; where the models run.
fn report_providers(asked: &[String], verdict: &mut Verdict) {
    line("providers asked", asked.join(", "));
    let mut usable = Vec::new();
    for p in asked {
        let available = runtime::provider_in_build(p);
        let why = if available {
            "available".to_string()
        } else {
            format!("not in this ONNX Runtime build (a CPU build: for {p}, point engine.onnxruntime at a GPU build)")
        };
        line(&format!("  {p}"), why);
        if available {
            usable.push(p.as_str());
        }
    }
    match usable.first() {
        Some(&"cpu") => line("models run on", "the CPU only: no GPU provider is available in this ONNX Runtime"),
        Some(p) => line("models run on", format!("{p} (the first provider available)")),
        None => verdict.fail(format!(
            "none of the providers asked for ({}) is available: add \"cpu\" to engine.providers or install a GPU build",
            asked.join(", ")
        )),
    }
}

/// Every bundle the enabled cameras use: loads, and where it runs.
fn report_bundles(loaded: &clefd::config::Settings, providers: &[String], verdict: &mut Verdict) {
    let opts = SessionOptions { threads: 1, ..Default::default() };
    let gpu = SessionOptions { threads: 1, providers: providers.to_vec(), ..Default::default() }.accelerated();
    for dir in loaded.bundles_in_use() {
        match clefd::engine::Bundle::load(dir, &opts) {
            Ok(b) => line(
                &format!("bundle {}", b.manifest.name),
                format!(
                    "{} {} loads; debias {}; runs on {}",
                    dir.display(),
                    b.manifest.version,
                    match (b.debias(), b.fused()) {
                        (true, true) => "on (CLEF in the fused graph)",
                        (true, false) => "on (CLEF on the host)",
                        _ => "off",
                    },
                    if gpu { "the GPU" } else { "the CPU" }
                ),
            ),
            Err(e) => {
                line("bundle", format!("{}: {e}", dir.display()));
                verdict.fail(format!("bundle {} cannot load", dir.display()));
            }
        }
    }
}

/// GStreamer's version, NVIDIA's elements, and whether csi:// cameras can work.
fn report_gstreamer(loaded: Option<&clefd::config::Settings>, verdict: &mut Verdict) {
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
fn report_devices() {
    let visible: Vec<&str> = GPU_NODES.into_iter().filter(|p| Path::new(p).exists()).collect();
    if visible.is_empty() {
        line("GPU devices", "none visible (no /dev/nvhost-*, /dev/nvgpu, /dev/nvidia*, /dev/nvmap, /dev/dri)");
    } else {
        line("GPU devices", visible.join(", "));
    }
}

/// Where built engines are cached, and what is there.
fn report_cache(loaded: &clefd::config::Settings) {
    let dir = &loaded.engine.cache_dir;
    let state = match std::fs::read_dir(dir) {
        Ok(entries) => format!("{} file(s)", entries.count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "empty (nothing built yet)".into(),
        Err(e) => format!("unreadable: {e}"),
    };
    line("engine cache", format!("{}: {state}", dir.display()));
}
