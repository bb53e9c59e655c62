//! What the configuration requires of this machine before anything starts:
//! `engine.require` (a provider, never a quiet CPU fallback) and `engine.dla_core` (the
//! DLA compiler). `run` refuses to start when either cannot be met
//! ([`super::EXIT_UNAVAILABLE`]); `doctor` lists the same reasons.

use clefd::config::{EngineSettings, Require};
use clefd::engine::runtime;

/// Every requirement of `[engine]` this machine cannot meet, each in words that say what
/// to install or change; ONNX Runtime must be loaded ([`runtime::init`]).
pub fn unmet(engine: &EngineSettings) -> Vec<String> {
    let providers: Vec<String> = engine.providers.iter().map(|p| p.as_str().to_string()).collect();
    let mut out = Vec::new();
    if let Err(e) = runtime::check_required(engine.require, &providers) {
        out.push(e.to_string());
    }
    if let Some(reason) = engine.dla_core.and_then(|core| clefd::jetson::dla_refusal(&clefd::jetson::root(), core)) {
        out.push(reason);
    }
    out
}

/// [`unmet`] as one error for `run`.
///
/// `CLEFD_TEST_LATE_REQUIRE` (tests only) leaves `engine.require` to the model load: on a
/// GPU build whose CUDA or TensorRT libraries are missing, the library lists the provider,
/// this check passes and the load fails; a CPU build cannot list them, so the tests reach
/// that path (a real load on the real library) this way.
pub fn check(engine: &EngineSettings) -> Result<(), String> {
    let late = std::env::var_os("CLEFD_TEST_LATE_REQUIRE").is_some();
    let early = EngineSettings { require: if late { Require::Any } else { engine.require }, ..engine.clone() };
    let reasons = unmet(&early);
    if reasons.is_empty() { Ok(()) } else { Err(reasons.join("; ")) }
}
