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
/// that path (a real load on the real library) this way. Only `=1` turns it on, with a
/// warning, so a stray or empty variable never weakens a service's check.
pub fn check(engine: &EngineSettings) -> Result<(), String> {
    let late = late_require(std::env::var_os("CLEFD_TEST_LATE_REQUIRE").as_deref());
    if late && engine.require != Require::Any {
        tracing::warn!(
            require = engine.require.as_str(),
            "CLEFD_TEST_LATE_REQUIRE=1 (tests only): engine.require is checked at model load, not before the start"
        );
    }
    let early = EngineSettings { require: if late { Require::Any } else { engine.require }, ..engine.clone() };
    let reasons = unmet(&early);
    if reasons.is_empty() { Ok(()) } else { Err(reasons.join("; ")) }
}

/// Whether `CLEFD_TEST_LATE_REQUIRE`'s value turns the late check on: `1` only.
fn late_require(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}
