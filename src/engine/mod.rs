//! The models: bundle manifests, ONNX Runtime (with the TensorRT and CUDA providers where
//! present), and turning frames into input tensors.

pub mod classifier;
mod detector;
pub mod manifest;
pub mod preprocess;
pub mod runtime;
pub mod tensorrt;

use std::path::Path;

use classifier::Classifier;
pub use detector::Detector;
use manifest::Manifest;
use runtime::{EngineError, Model, SessionOptions};

/// sha256 of `bytes`, lowercase hex: how manifests and model files are identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Errors from loading a bundle: a bad manifest or a model that does not fit it.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The manifest itself is wrong.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// ONNX Runtime or a model failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A bundle with all its models loaded and checked against the manifest.
#[derive(Debug)]
pub struct Bundle {
    /// The manifest, with its digest.
    pub manifest: Manifest,
    /// The face detector.
    pub detector: Detector,
    /// The vanilla CAER model (`Y_e`).
    pub vanilla: Classifier,
    /// The context-only branch (`Y_c`), when the bundle has one.
    pub context_branch: Option<Classifier>,
}

impl Bundle {
    /// Loads `dir`; ONNX Runtime must already be initialised ([`runtime::init`]).
    pub fn load(dir: &Path, opts: &SessionOptions) -> Result<Bundle, BundleError> {
        let manifest = Manifest::load(dir)?;
        let k = manifest.labels.len();
        let det_model = Model::load("detector", &dir.join(&manifest.detector.file), opts)?;
        let detector = Detector::new(det_model, manifest.detector.clone())?;
        let vanilla =
            Classifier::new(Model::load("vanilla", &dir.join(&manifest.vanilla.file), opts)?, &manifest.vanilla, k)?;
        let context_branch = match &manifest.context_branch {
            Some(spec) => Some(Classifier::new(Model::load("context_branch", &dir.join(&spec.file), opts)?, spec, k)?),
            None => None,
        };
        tracing::debug!(
            bundle = %manifest.name,
            version = %manifest.version,
            sha256 = %&manifest.sha256[..12],
            debias = if context_branch.is_some() { "on" } else { "off (no context branch: events carry factual scores)" },
            "loaded engine bundle"
        );
        Ok(Bundle { manifest, detector, vanilla, context_branch })
    }
}
