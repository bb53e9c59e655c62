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

/// Where the service's drop-ins live (the package installs the Jetson one there).
const DROP_INS: &str = "etc/systemd/system/clefd.service.d";

/// The `engine.require` the service's drop-ins give it (`Environment=CLEFD__ENGINE__REQUIRE=…`
/// in `/etc/systemd/system/clefd.service.d/*.conf` under `root`), read in systemd's order
/// (by file name, a later assignment winning, an empty `Environment=` clearing). Read as
/// files, like the other Jetson facts, so tests give a root and nothing asks systemd.
pub fn service_require(root: &std::path::Path) -> Option<String> {
    let dir = root.join(DROP_INS);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let mut found = None;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for line in text.lines().map(str::trim) {
            let Some(assignments) = line.strip_prefix("Environment=") else { continue };
            if assignments.trim().is_empty() {
                found = None;
            }
            for a in assignments.split_whitespace().map(|a| a.trim_matches(|c| c == '"' || c == '\'')) {
                if let Some((k, v)) = a.split_once('=')
                    && k.to_uppercase().replace('-', "_") == "CLEFD__ENGINE__REQUIRE"
                {
                    found = Some(v.to_lowercase());
                }
            }
        }
    }
    found
}

/// A warning when the service runs with another `engine.require` than this command (the
/// Jetson drop-in sets `gpu` for the unit only, so `build-engines` and `doctor` run from a
/// shell say "ready" or "ok" where the service exits 69), with the command that sees what
/// the service sees.
pub fn service_mismatch(engine: &EngineSettings) -> Option<String> {
    let service = service_require(&clefd::jetson::root())?;
    (service != engine.require.as_str()).then(|| {
        format!(
            "the service runs with engine.require={service}; this run does not (it has \"{}\"): to see what the \
             service sees, run `sudo -u clefd env CLEFD__ENGINE__REQUIRE={service} clefd build-engines`",
            engine.require.as_str()
        )
    })
}
