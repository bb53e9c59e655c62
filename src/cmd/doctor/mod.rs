//! `clefd doctor`: one screen a user can paste into a bug report, and a health check a
//! script can trust. What clefd, ONNX Runtime and GStreamer are, which execution provider
//! each bundle would get and what `engine.require` needs, the Jetson release, the GPU
//! device nodes this process can see, the engine cache; then whether the service can run:
//! the broker accepts us, `http.listen` can be bound, `state_dir` and the spool can be
//! written and have room, and (`--cameras`) each camera answers. Its verdict is `ok` only
//! when all of that holds.
//!
//! Exit codes: 0 ok; 1 something cannot work (each listed last, with what to do);
//! 78 the configuration itself is invalid.

mod engine;
mod health;
mod platform;

use std::path::Path;
use std::process::ExitCode;

use clefd::engine::runtime;

/// The oldest ONNX Runtime this build loads (the `ort` crate's `api-18` feature): JetPack
/// 5's ONNX Runtime GPU builds stop at 1.18.
pub const ORT_API_FLOOR: &str = "1.18";

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

/// `clefd doctor`; with `cameras`, each enabled camera is also opened.
pub fn doctor(config: &Path, cameras: bool) -> anyhow::Result<ExitCode> {
    // Warnings (a fallback, the tests' fake GPU) go to stderr; the report is stdout.
    clefd::service::init_logging("warn");
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
    platform::report_jetson(&mut verdict);
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
            engine::report_providers(&providers, &mut verdict);
            if let Some(l) = &loaded {
                let required_met = engine::report_requirements(&l.engine, &mut verdict);
                engine::report_bundles(l, required_met, &mut verdict);
            }
        }
        Err(e) => {
            line("ONNX Runtime", format!("cannot be loaded: {e}"));
            verdict.fail("ONNX Runtime cannot be loaded: no model can run".into());
        }
    }
    platform::report_gstreamer(loaded.as_ref(), &mut verdict);
    platform::report_devices();
    if let Some(l) = &loaded {
        platform::report_cache(&l.engine.cache_dir);
        health::report_broker(l, &mut verdict);
        health::report_http(l, &mut verdict);
        health::report_folders(l, &mut verdict);
        if cameras {
            health::report_cameras(l, &mut verdict);
        } else {
            line("cameras", "not opened (add --cameras to check that each answers)");
        }
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
