//! `clefd build-engines`: every bundle's models loaded once, as the daemon will load them,
//! so TensorRT builds and caches its engines ahead of the first start (minutes on a
//! Jetson) instead of during it, and proven against the bundle's golden vectors
//! (`engine::acceptance`) on the provider and precision each got, with the numbers shown.

use std::path::Path;
use std::process::ExitCode;

use clefd::engine::{ClefPlacement, acceptance};

/// `clefd build-engines`; with `if_gpu`, only where a GPU provider would take the models.
/// Exit codes: 0 every bundle is ready, [`super::EXIT_CONFIG`] an invalid configuration
/// (as `run`), [`super::EXIT_UNAVAILABLE`] what `engine.require` or `engine.dla_core`
/// needs cannot be had (a required provider that fails engine acceptance included; as
/// `run`, and 69 when any of several bundles is unmet), 1 a bundle that cannot load or
/// fails acceptance for another reason (`run` exits 78 for it: the bundle is a setting to
/// fix, while build-engines reports per bundle). With `if_gpu` and no GPU provider in
/// ONNX Runtime, nothing is checked and it exits 0 (the package's install step).
pub fn build_engines(config: &Path, if_gpu: bool) -> anyhow::Result<ExitCode> {
    clefd::service::init_logging("info");
    let settings = match super::options::load_config(config) {
        Ok(l) => l,
        Err(errors) => {
            for p in &errors.0 {
                tracing::error!("{p}");
            }
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    if let Some(warning) = super::requirements::service_mismatch(&settings.engine) {
        tracing::warn!("{warning}");
    }
    clefd::engine::runtime::init(settings.engine.onnxruntime.as_deref())?;
    let opts = super::options::session_options(&settings.engine);
    if !opts.accelerated() && if_gpu {
        tracing::info!(providers = ?opts.providers, "no GPU provider in this ONNX Runtime: nothing to build");
        return Ok(ExitCode::SUCCESS);
    }
    // What `run` refuses to start without, refused here too and with the same code.
    if let Err(reason) = super::requirements::check(&settings.engine) {
        tracing::error!("{reason}; `clefd run` will not start without it");
        return Ok(ExitCode::from(super::EXIT_UNAVAILABLE));
    }
    if !opts.accelerated() {
        tracing::info!(providers = ?opts.providers, "no GPU provider in this ONNX Runtime: models run on the CPU, nothing to build");
    }
    let dirs = settings.bundles_in_use();
    let (mut failed, mut unmet) = (0, 0);
    for (i, dir) in dirs.iter().enumerate() {
        tracing::info!(bundle = %dir.display(), "loading bundle {} of {}", i + 1, dirs.len());
        let started = std::time::Instant::now();
        match acceptance::load(dir, &opts, ClefPlacement::Engine) {
            Ok(a) => {
                let b = &a.bundle;
                for c in &a.checks {
                    println!("{}: {c}", b.manifest.name);
                }
                tracing::info!(
                    bundle = %b.manifest.name,
                    detector = b.detector.provider(),
                    classifiers = %b.classifier_providers().iter().map(|(m, p)| format!("{m}: {p}")).collect::<Vec<_>>().join(", "),
                    load_and_acceptance_ms = started.elapsed().as_millis() as u64,
                    fell_back = a.fell_back,
                    "ready: a start loads these models without building"
                )
            }
            Err(e) => {
                tracing::error!(bundle = %dir.display(), "{e}");
                failed += 1;
                unmet += usize::from(e.unmet_requirement());
            }
        }
    }
    Ok(match (failed, unmet) {
        (0, _) => ExitCode::SUCCESS,
        // As `run` would: the required provider cannot be had (or fails acceptance).
        (_, 1..) => ExitCode::from(super::EXIT_UNAVAILABLE),
        _ => ExitCode::from(1),
    })
}
