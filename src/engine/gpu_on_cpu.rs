//! Fault injection for the tests, `CLEFD_TEST_GPU_ON_CPU=tensorrt` (or `cuda`, or
//! `tensorrt,cuda`): this CPU build of ONNX Runtime acts as if it had those GPU providers,
//! and a model "loaded on" one runs on the CPU provider under its name. No GPU is on the
//! test machine, yet the paths that need one that *loads* (engine acceptance rejecting a
//! GPU's numbers under `engine.require`, and falling back down the chain) must run in a
//! daemon test: with golden vectors the CPU cannot reproduce, the fake GPU is rejected as a
//! real one whose numbers drift would be. Only those names turn it on (a stray or empty
//! variable fakes nothing), and it logs a warning once when it does. Under systemd
//! (`INVOCATION_ID` set: the service) it is ignored, with a warning, so a test setting
//! copied into a unit never puts a Jetson's models on its CPU while reporting the GPU.

use std::sync::OnceLock;

/// The GPU providers faked, read once per process.
fn faked() -> &'static [String] {
    static FAKED: OnceLock<Vec<String>> = OnceLock::new();
    FAKED.get_or_init(|| {
        let list = parse(std::env::var("CLEFD_TEST_GPU_ON_CPU").ok().as_deref());
        if !list.is_empty() && std::env::var_os("INVOCATION_ID").is_some() {
            tracing::warn!(
                providers = %list.join(","),
                "CLEFD_TEST_GPU_ON_CPU (tests only) is ignored under systemd (INVOCATION_ID is set): remove it from the unit"
            );
            return Vec::new();
        }
        if !list.is_empty() {
            tracing::warn!(
                providers = %list.join(","),
                "CLEFD_TEST_GPU_ON_CPU (tests only): these GPU providers are faked and run on the CPU provider"
            );
        }
        list
    })
}

/// The providers a value names: `tensorrt` and `cuda` only, anything else is ignored.
fn parse(value: Option<&str>) -> Vec<String> {
    let Some(value) = value else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if matches!(name, "tensorrt" | "cuda") && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// The GPU providers faked on the CPU in this process (empty: none), for reports that
/// must say so (`doctor`, the start's warning).
pub(super) fn faked_providers() -> &'static [String] {
    faked()
}

/// Whether `provider` is faked on the CPU in this process.
pub(super) fn is_faked(provider: &str) -> bool {
    faked().iter().any(|p| p == provider)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_gpu_provider_names_turn_it_on() {
        assert_eq!(parse(Some("tensorrt")), ["tensorrt"]);
        assert_eq!(parse(Some("cuda, tensorrt,cuda")), ["cuda", "tensorrt"]);
        for stray in [None, Some(""), Some("0"), Some("1"), Some("cpu"), Some("TensorRT")] {
            assert!(parse(stray).is_empty(), "{stray:?}");
        }
    }
}
