//! One function per subcommand; each returns the process exit code.

pub mod bench;
mod control;
mod cpu;
pub mod doctor;
pub mod engines;
pub mod eval;
pub mod explain;
pub mod faces;
mod options;
mod publishing;
mod requirements;
pub mod run;
mod subscriber;
pub mod synth;
pub mod watch;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use synth::{ClipSpec, Sprite, make_clip as render};

/// The exit code for "the configuration is invalid" (sysexits' EX_CONFIG), from both
/// `check-config` and `run`; the unit's `RestartPreventExitStatus` stops restart loops on it.
pub const EXIT_CONFIG: u8 = 78;

/// The exit code for "what the configuration requires is not on this machine"
/// (sysexits' EX_UNAVAILABLE): `engine.require` names a provider the ONNX Runtime lacks,
/// or `engine.dla_core` a DLA whose libraries are missing. `run` exits with it instead of
/// running somewhere slower; the unit's `RestartPreventExitStatus` lists it, since a
/// restart cannot install a library.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// `clefd check-config`.
pub fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match options::load_config(path) {
        Ok(settings) => {
            let problems = load_bundles(&settings);
            if !problems.is_empty() {
                for p in &problems {
                    println!("{p}");
                }
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let cams = settings.enabled_cameras().count();
            println!("{}: ok ({} camera(s) enabled, device id '{}')", path.display(), cams, settings.device_id);
            if cams == 0 {
                println!(
                    "note: no camera configured yet: add one in {}/cameras.d/NAME.toml",
                    path.parent().unwrap_or(path).display()
                );
            }
            print_kept_controls(&settings);
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for p in &errors.0 {
                println!("{p}");
            }
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// What runtime control set and keeps for the next start (`mqtt.control_persist`), so
/// that a camera the files enable but MQTT turned off is no surprise.
fn print_kept_controls(settings: &clefd::config::Settings) {
    let Some(control) = &settings.mqtt.control else { return };
    let Some(path) = &control.persist else {
        println!("runtime control over MQTT: on (what it sets is forgotten at a restart)");
        return;
    };
    match control::Controls::load(path) {
        Ok(kept) if kept.0.is_empty() => {
            println!("runtime control over MQTT: on, kept in {} (nothing set)", path.display())
        }
        Ok(kept) => {
            println!("runtime control over MQTT: on; set over MQTT and kept in {} (over the files):", path.display());
            for (camera, set) in &kept.0 {
                let shown = serde_json::to_string(set).unwrap_or_default();
                let known = if settings.cameras.contains_key(camera) { "" } else { " (no such camera now: ignored)" };
                println!("  {camera}: {shown}{known}");
            }
        }
        Err(e) => println!("runtime control over MQTT: on; what it kept cannot be read ({e}): ignored at start"),
    }
}

/// Loads every bundle the enabled cameras use, models and all, exactly as `run` would
/// (on the CPU: a GPU build of engines is `run`'s business), so a bundle that cannot run
/// is reported here and not after a restart or a reload.
fn load_bundles(settings: &clefd::config::Settings) -> Vec<String> {
    if let Err(e) = clefd::engine::runtime::init(settings.engine.onnxruntime.as_deref()) {
        return vec![format!("engine.onnxruntime: {e}")];
    }
    let opts = clefd::engine::runtime::SessionOptions { threads: 1, ..Default::default() };
    settings
        .bundles_in_use()
        .into_iter()
        .filter_map(|dir| {
            clefd::engine::Bundle::load(dir, &opts).err().map(|e| format!("bundle {}: {e}", dir.display()))
        })
        .collect()
}

/// `clefd make-clip`.
pub fn make_clip(image: &Path, out: &Path, seconds: f64, fps: u32, size: &str, scale: f64) -> anyhow::Result<ExitCode> {
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .filter(|&(w, h)| (32..=4096).contains(&w) && (32..=4096).contains(&h))
        .with_context(|| format!("--size '{size}' must be WIDTHxHEIGHT, each 32..4096"))?;
    if !(0.05..=1.0).contains(&scale) || !(1..=120).contains(&fps) || !(0.1..=600.0).contains(&seconds) {
        bail!("--scale must be 0.05..1, --fps 1..120 and --seconds 0.1..600");
    }
    let picture = clefd::source::decode_image(image)?;
    let ph = (h as f64 * scale) as usize;
    let pw = (ph as f64 * picture.width as f64 / picture.height as f64) as usize;
    let travel = (w.saturating_sub(pw)) as f32;
    let top = (h - ph) as f32 / 2.0;
    let spec = ClipSpec {
        width: w,
        height: h,
        fps,
        frames: (seconds * f64::from(fps)).round() as u32,
        sprites: vec![Sprite {
            image: picture,
            size: (pw, ph),
            from: (0.1 * travel, top),
            to: (0.9 * travel, top),
            round_trips: 1.0,
        }],
    };
    render(&spec, out)?;
    println!("wrote {} ({}x{}, {} frames at {} fps)", out.display(), w, h, spec.frames, fps);
    Ok(ExitCode::SUCCESS)
}
