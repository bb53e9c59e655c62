//! TensorRT, tuned for a daemon that must never rebuild an engine it already built.
//!
//! ONNX Runtime's TensorRT provider builds an engine per model the first time it sees it
//! (minutes on a Jetson) and again whenever a batch size outside the range seen so far
//! arrives, unless it is given explicit optimisation profiles. So every dynamic input gets
//! a profile from batch 1 to `batch_max`, engines and timing caches go to a folder whose
//! name is a key over everything that makes an engine stale (the model's digest, the
//! precision, the profile, the TensorRT version, the GPU), and the first build dumps an
//! EP-context model so a restart loads without building. Pure: the caller finds the
//! model's inputs, TensorRT's version and the GPU, and hands the options to ONNX Runtime.

use std::path::Path;

use sha2::{Digest, Sha256};

pub use crate::config::Precision;

/// What one engine is built for, besides the model itself.
#[derive(Debug, Clone, PartialEq)]
pub struct TrtSettings {
    /// Arithmetic.
    pub precision: Precision,
    /// Deep-learning accelerator core (Xavier, Orin AGX/NX), or the GPU.
    pub dla_core: Option<u32>,
    /// Largest batch a profile covers (`engine.batch_max`).
    pub batch_max: usize,
}

/// The machine an engine is built on: an engine from another TensorRT or GPU is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// TensorRT's version (`8.5.2`), `unknown` when it cannot be found.
    pub tensorrt: String,
    /// The GPU (compute capability or model), `unknown` when it cannot be found.
    pub gpu: String,
}

/// Optimisation profiles: for each input with a dynamic batch dimension, its shape at
/// batch 1 (min), at `opt` and at `batch_max` (max), in TensorRT's `name:AxBxC` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profiles {
    /// `trt_profile_min_shapes`.
    pub min: String,
    /// `trt_profile_opt_shapes`.
    pub opt: String,
    /// `trt_profile_max_shapes`.
    pub max: String,
}

/// Profiles for `inputs` (name and shape, -1 where dynamic). Only the batch dimension may
/// be dynamic in a bundle's models; other dynamic dimensions are refused by name. `None`
/// when every input is static (TensorRT needs no profile then).
pub fn profiles(inputs: &[(String, Vec<i64>)], batch_max: usize) -> Result<Option<Profiles>, String> {
    let opt = batch_max.clamp(1, 4);
    let mut parts: [Vec<String>; 3] = Default::default();
    for (name, shape) in inputs {
        if shape.iter().skip(1).any(|&d| d < 0) {
            return Err(format!("input '{name}' {shape:?} has a dynamic dimension besides the batch: export it fixed"));
        }
        if shape.first().is_none_or(|&d| d >= 0) {
            continue;
        }
        let rest: Vec<String> = shape.iter().skip(1).map(i64::to_string).collect();
        for (part, batch) in parts.iter_mut().zip([1, opt, batch_max.max(1)]) {
            part.push(format!(
                "{name}:{}",
                std::iter::once(batch.to_string()).chain(rest.iter().cloned()).collect::<Vec<_>>().join("x")
            ));
        }
    }
    if parts[0].is_empty() {
        return Ok(None);
    }
    let [min, opt, max] = parts.map(|p| p.join(","));
    Ok(Some(Profiles { min, opt, max }))
}

/// The cache folder's name for one engine: a digest of everything that makes a built
/// engine stale, so a JetPack upgrade or a moved SD card never loads a wrong one.
pub fn cache_key(model_digest: &str, settings: &TrtSettings, profiles: Option<&Profiles>, machine: &Machine) -> String {
    let mut h = Sha256::new();
    for part in [
        model_digest,
        settings.precision.name(),
        &settings.dla_core.map_or_else(|| "gpu".into(), |c| format!("dla{c}")),
        &profiles.map_or_else(String::new, |p| format!("{}|{}|{}", p.min, p.opt, p.max)),
        &machine.tensorrt,
        &machine.gpu,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The provider options for one model whose engines live in `dir` (the keyed folder).
pub fn provider_options(settings: &TrtSettings, profiles: Option<&Profiles>, dir: &Path) -> Vec<(String, String)> {
    let d = dir.display().to_string();
    let mut o: Vec<(String, String)> = vec![
        ("trt_engine_cache_enable".into(), "1".into()),
        ("trt_engine_cache_path".into(), d.clone()),
        ("trt_timing_cache_enable".into(), "1".into()),
        ("trt_timing_cache_path".into(), d.clone()),
        // After the first build, a model that embeds the engine: loads without building.
        ("trt_dump_ep_context_model".into(), "1".into()),
        ("trt_ep_context_file_path".into(), d),
    ];
    match &settings.precision {
        Precision::Fp16 => o.push(("trt_fp16_enable".into(), "1".into())),
        Precision::Fp32 => {}
        Precision::Int8 { calibration_table } => {
            o.push(("trt_fp16_enable".into(), "1".into()));
            o.push(("trt_int8_enable".into(), "1".into()));
            o.push(("trt_int8_calibration_table_name".into(), calibration_table.display().to_string()));
        }
    }
    if let Some(core) = settings.dla_core {
        o.push(("trt_dla_enable".into(), "1".into()));
        o.push(("trt_dla_core".into(), core.to_string()));
    }
    if let Some(p) = profiles {
        o.push(("trt_profile_min_shapes".into(), p.min.clone()));
        o.push(("trt_profile_opt_shapes".into(), p.opt.clone()));
        o.push(("trt_profile_max_shapes".into(), p.max.clone()));
    }
    o
}

/// TensorRT's version on this machine, from the `libnvinfer.so.X.Y.Z` in the library
/// folders (JetPack and NVIDIA's packages install it there).
pub fn installed_version() -> Option<String> {
    ["/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64", "/usr/lib"].iter().find_map(
        |dir| {
            std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = name.strip_prefix("libnvinfer.so.")?;
                (v.matches('.').count() >= 2).then(|| v.to_string())
            })
        },
    )
}

/// The GPU this machine has: a Jetson's model from the device tree, or a desktop GPU's
/// name from the NVIDIA driver.
pub fn installed_gpu() -> Option<String> {
    if let Ok(model) = std::fs::read_to_string("/proc/device-tree/model") {
        return Some(model.trim_end_matches('\0').trim().to_string());
    }
    let gpus = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    gpus.filter_map(Result::ok).find_map(|g| {
        let info = std::fs::read_to_string(g.path().join("information")).ok()?;
        info.lines().find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
    })
}

/// This machine, as far as it can be told.
pub fn this_machine() -> Machine {
    Machine {
        tensorrt: installed_version().unwrap_or_else(|| "unknown".into()),
        gpu: installed_gpu().unwrap_or_else(|| "unknown".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(precision: Precision) -> TrtSettings {
        TrtSettings { precision, dla_core: None, batch_max: 16 }
    }

    fn inputs() -> Vec<(String, Vec<i64>)> {
        vec![("face".into(), vec![-1, 1, 48, 48]), ("context".into(), vec![-1, 3, 112, 112])]
    }

    #[test]
    fn every_dynamic_input_gets_a_profile_from_one_to_batch_max() {
        let p = profiles(&inputs(), 16).unwrap().unwrap();
        assert_eq!(p.min, "face:1x1x48x48,context:1x3x112x112");
        assert_eq!(p.opt, "face:4x1x48x48,context:4x3x112x112");
        assert_eq!(p.max, "face:16x1x48x48,context:16x3x112x112");
        assert_eq!(profiles(&[("x".into(), vec![1, 3, 192, 192])], 16).unwrap(), None, "static: no profile");
        let bad = profiles(&[("x".into(), vec![-1, 3, -1, 192])], 16).unwrap_err();
        assert!(bad.contains("'x'") && bad.contains("besides the batch"), "{bad}");
    }

    #[test]
    fn the_options_that_reach_onnx_runtime_follow_the_settings() {
        let p = profiles(&inputs(), 8).unwrap();
        let dir = Path::new("/var/lib/clefd/engine-cache/vanilla-0123");
        let get = |o: &[(String, String)], k: &str| o.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let fp16 = provider_options(&settings(Precision::Fp16), p.as_ref(), dir);
        assert_eq!(get(&fp16, "trt_fp16_enable").as_deref(), Some("1"));
        assert_eq!(get(&fp16, "trt_int8_enable"), None);
        assert_eq!(get(&fp16, "trt_profile_max_shapes").as_deref(), Some("face:8x1x48x48,context:8x3x112x112"));
        assert_eq!(get(&fp16, "trt_engine_cache_path").as_deref(), Some("/var/lib/clefd/engine-cache/vanilla-0123"));
        assert_eq!(get(&fp16, "trt_dump_ep_context_model").as_deref(), Some("1"));
        let fp32 = provider_options(&settings(Precision::Fp32), None, dir);
        assert_eq!(get(&fp32, "trt_fp16_enable"), None);
        assert_eq!(get(&fp32, "trt_profile_min_shapes"), None);
        let int8 = Precision::Int8 { calibration_table: "/etc/clefd/calib.table".into() };
        let mut dla = settings(int8);
        dla.dla_core = Some(1);
        let o = provider_options(&dla, None, dir);
        assert_eq!(get(&o, "trt_int8_enable").as_deref(), Some("1"));
        assert_eq!(get(&o, "trt_int8_calibration_table_name").as_deref(), Some("/etc/clefd/calib.table"));
        assert_eq!((get(&o, "trt_dla_enable").as_deref(), get(&o, "trt_dla_core").as_deref()), (Some("1"), Some("1")));
    }

    #[test]
    fn the_cache_key_changes_with_everything_that_makes_an_engine_stale() {
        let m = Machine { tensorrt: "8.5.2".into(), gpu: "NVIDIA Jetson Orin Nano".into() };
        let p = profiles(&inputs(), 16).unwrap();
        let base = cache_key("abc", &settings(Precision::Fp16), p.as_ref(), &m);
        assert_eq!(base, cache_key("abc", &settings(Precision::Fp16), p.as_ref(), &m), "stable");
        let p8 = profiles(&inputs(), 8).unwrap();
        let variants = [
            cache_key("abd", &settings(Precision::Fp16), p.as_ref(), &m),
            cache_key("abc", &settings(Precision::Fp32), p.as_ref(), &m),
            cache_key("abc", &settings(Precision::Fp16), p8.as_ref(), &m),
            cache_key(
                "abc",
                &settings(Precision::Fp16),
                p.as_ref(),
                &Machine { tensorrt: "10.3.0".into(), ..m.clone() },
            ),
            cache_key("abc", &settings(Precision::Fp16), p.as_ref(), &Machine { gpu: "Xavier NX".into(), ..m.clone() }),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i} (digest, precision, profile, TensorRT, GPU) must change the key");
        }
    }

    #[test]
    fn precisions_parse_with_clear_errors() {
        assert_eq!(Precision::parse("fp16", None), Ok(Precision::Fp16));
        assert!(Precision::parse("int8", None).unwrap_err().contains("calibration"));
        assert!(Precision::parse("fp8", None).unwrap_err().contains("use fp16, fp32 or int8"));
    }
}
