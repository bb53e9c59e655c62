//! The engine's part of `clefd doctor`: ONNX Runtime, the providers asked for and the
//! ones it has, what `engine.require` and `engine.dla_core` need, and each bundle in use.

use clefd::engine::runtime::{self, SessionOptions};

use super::{Verdict, line};

/// Each provider asked for: in this build of ONNX Runtime or not; where the models run.
pub(super) fn report_providers(asked: &[String], verdict: &mut Verdict) {
    line("providers asked", asked.join(", "));
    line("providers built", runtime::providers_in_library().join(", "));
    let faked = runtime::faked_gpu_providers();
    if !faked.is_empty() {
        line(
            "test hook",
            format!(
                "CLEFD_TEST_GPU_ON_CPU fakes {} on the CPU: every \"tensorrt\"/\"cuda\" below is the CPU",
                faked.join(", ")
            ),
        );
        verdict.fail(
            "CLEFD_TEST_GPU_ON_CPU is set (tests only): unset it, the GPU providers it names are faked on the CPU"
                .into(),
        );
    }
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
        Some(&"cpu") if asked.iter().any(|p| p != "cpu") => line(
            "models run on",
            "the CPU only: no GPU provider is available in this ONNX Runtime (a fallback: `run` warns on every start)",
        ),
        Some(&"cpu") => line("models run on", "the CPU only, as engine.providers asks"),
        Some(p) => line("models run on", format!("{p} (the first provider available)")),
        None => verdict.fail(format!(
            "none of the providers asked for ({}) is available: add \"cpu\" to engine.providers or install a GPU build",
            asked.join(", ")
        )),
    }
}

/// `engine.require` and `engine.dla_core`: what `run` would refuse to start without.
/// Whether they are met before any model loads.
pub(super) fn report_requirements(engine: &clefd::config::EngineSettings, verdict: &mut Verdict) -> bool {
    if let Some(warning) = super::super::requirements::service_mismatch(engine) {
        tracing::warn!("{warning}");
        line("service", &warning);
    }
    let unmet = super::super::requirements::unmet(engine);
    let dla = engine.dla_core.map_or_else(String::new, |c| format!(", engine.dla_core = {c}"));
    if unmet.is_empty() {
        // A provider `require` names is there; whether it passes acceptance is per bundle.
        let met = match engine.require {
            runtime::Require::Any => "met",
            _ => "provider present (engine acceptance per bundle below)",
        };
        line("required", format!("engine.require = \"{}\"{dla}: {met}", engine.require.as_str()));
        return true;
    }
    line("required", format!("engine.require = \"{}\"{dla}: NOT met (`run` exits 69)", engine.require.as_str()));
    for reason in unmet {
        verdict.fail(reason);
    }
    false
}

/// Every bundle the enabled cameras use: loads, passes engine acceptance, and where it
/// runs, with the providers and `engine.require` that `run` would load it with (so a
/// required GPU that fails acceptance is found here too). When a requirement is already
/// unmet (reported above), the bundles are loaded as `"any"` would, without the DLA, to
/// say where they could run. Doctor never builds a TensorRT engine nor writes the cache
/// (minutes of silence, and root-owned folders the service cannot write): a model whose
/// engine is not built yet is reported so, and its bundle checked on the CPU.
pub(super) fn report_bundles(loaded: &clefd::config::Settings, required_met: bool, verdict: &mut Verdict) {
    let mut opts =
        SessionOptions { threads: 1, cache_only: true, ..super::super::options::session_options(&loaded.engine) };
    if !required_met {
        opts.require = runtime::Require::Any;
        opts.tensorrt.dla_core = None;
    }
    let on_cpu = SessionOptions { providers: vec!["cpu".into()], require: runtime::Require::Any, ..opts.clone() };
    for dir in loaded.bundles_in_use() {
        let (result, checked_on_cpu) = match clefd::engine::Bundle::load_accepted(dir, &opts) {
            Err(e) if e.not_built() => {
                line("bundle", format!("{}: {e}", dir.display()));
                (clefd::engine::Bundle::load_accepted(dir, &on_cpu), true)
            }
            other => (other, false),
        };
        match result {
            Ok(b) => line(
                &format!("bundle {}", b.manifest.name),
                format!(
                    "{} {} loads; debias {}; runs on {}; engine acceptance: {}",
                    dir.display(),
                    b.manifest.version,
                    match (b.debias(), b.fused()) {
                        (true, true) => "on (CLEF in the fused graph)",
                        (true, false) => "on (CLEF on the host)",
                        _ => "off",
                    },
                    match b.provider() {
                        _ if checked_on_cpu => "the CPU here (checked there until its TensorRT engine is built)".into(),
                        "cpu" => "the CPU".to_string(),
                        gpu => format!("the GPU ({gpu})"),
                    },
                    clefd::engine::acceptance::verdict(&b.manifest.name)
                ),
            ),
            Err(e) if e.unmet_requirement() => {
                line("bundle", format!("{}: {e}", dir.display()));
                line(
                    "required",
                    format!(
                        "engine.require = \"{}\": NOT met for bundle {} (`run` exits 69)",
                        loaded.engine.require.as_str(),
                        dir.display()
                    ),
                );
                verdict.fail(format!("bundle {}: {e}", dir.display()));
            }
            Err(e) => {
                line("bundle", format!("{}: {e}", dir.display()));
                verdict.fail(format!("bundle {} cannot load", dir.display()));
            }
        }
    }
}
