//! The models: bundle manifests, ONNX Runtime (with the TensorRT and CUDA providers where
//! present), and turning frames into input tensors.

pub mod acceptance;
pub mod classifier;
mod detector;
pub mod golden;
mod gpu_on_cpu;
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
    /// No provider reproduced the bundle's golden vectors, or they are unusable.
    #[error(transparent)]
    Acceptance(#[from] acceptance::AcceptanceError),
}

impl BundleError {
    /// Whether a cache-only load (`doctor`) found a TensorRT engine not built yet: not a
    /// fault, the bundle is then checked on the CPU and the user told how to build.
    pub fn not_built(&self) -> bool {
        matches!(self, BundleError::Engine(EngineError::NotBuilt { .. }))
    }

    /// Whether `engine.require` cannot be met: the required provider does not load the
    /// models, or loads them but no choice it allows reproduces the golden vectors. Not the
    /// bundle's fault but the machine's: `run` and `build-engines` exit 69 for it, not 78.
    pub fn unmet_requirement(&self) -> bool {
        matches!(
            self,
            BundleError::Engine(EngineError::Required { .. })
                | BundleError::Acceptance(acceptance::AcceptanceError::Required { .. })
        )
    }
}

/// Where CLEF's subtraction runs for a bundle that debiases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClefPlacement {
    /// In the bundle's fused graph (`[fused]`), beside the models on the accelerator, so
    /// the host only reads results; on the host for bundles without one.
    #[default]
    Engine,
    /// On the host, from the two models' logits: to compare the paths, or to rule the
    /// fused graph out.
    Host,
}

/// The bundle's classifiers, as loaded.
#[derive(Debug)]
pub enum Classifiers {
    /// The vanilla model (`Y_e`) and, when debiasing is on, the context branch (`Y_c`);
    /// CLEF is computed on the host from their logits.
    Separate {
        /// The vanilla CAER model.
        vanilla: Classifier,
        /// The context-only branch.
        context_branch: Option<Classifier>,
    },
    /// One graph with both models and CLEF: per subject the K values of each of
    /// [`manifest::FUSED_OUTPUTS`].
    Fused(Classifier),
}

/// A bundle with all its models loaded and checked against the manifest.
#[derive(Debug)]
pub struct Bundle {
    /// The manifest, with its digest.
    pub manifest: Manifest,
    /// The face detector.
    pub detector: Detector,
    /// The classifiers.
    pub classifiers: Classifiers,
}

impl Bundle {
    /// Loads `dir` with CLEF in the fused graph where the bundle has one; ONNX Runtime must
    /// already be initialised ([`runtime::init`]).
    pub fn load(dir: &Path, opts: &SessionOptions) -> Result<Bundle, BundleError> {
        Bundle::load_placed(dir, opts, ClefPlacement::Engine)
    }

    /// Loads `dir` as [`Bundle::load`] does, on the first provider and precision whose
    /// results reproduce the bundle's golden vectors ([`acceptance::load`]): how the daemon
    /// and `build-engines` load bundles, so no start serves numbers nobody checked.
    pub fn load_accepted(dir: &Path, opts: &SessionOptions) -> Result<Bundle, BundleError> {
        acceptance::load(dir, opts, ClefPlacement::Engine).map(|a| a.bundle)
    }

    /// Only the face detector of the bundle in `dir`: for finding faces in pictures
    /// (`clefd faces`) without loading the classifiers.
    pub fn load_detector(dir: &Path, opts: &SessionOptions) -> Result<Detector, BundleError> {
        Bundle::detector_of(dir, &Manifest::load(dir)?, opts)
    }

    fn detector_of(dir: &Path, manifest: &Manifest, opts: &SessionOptions) -> Result<Detector, BundleError> {
        let model = Model::load("detector", &dir.join(&manifest.detector.file), opts)?;
        Ok(Detector::new(model, manifest.detector.clone())?)
    }

    /// Loads `dir`, computing CLEF where `placement` says (the host for bundles without a
    /// fused graph). Only the models that path runs are loaded.
    pub fn load_placed(dir: &Path, opts: &SessionOptions, placement: ClefPlacement) -> Result<Bundle, BundleError> {
        let manifest = Manifest::load(dir)?;
        let k = manifest.labels.len();
        let detector = Bundle::detector_of(dir, &manifest, opts)?;
        let classifiers = match (&manifest.fused, placement) {
            (Some(fused), ClefPlacement::Engine) => {
                let model = Model::load("fused", &dir.join(&fused.file), opts)?;
                Classifiers::Fused(Classifier::with_outputs(model, &fused.inputs, &manifest::FUSED_OUTPUTS, k)?)
            }
            _ => {
                let vanilla = Model::load("vanilla", &dir.join(&manifest.vanilla.file), opts)?;
                let context_branch = match &manifest.context_branch {
                    Some(spec) => {
                        Some(Classifier::new(Model::load("context_branch", &dir.join(&spec.file), opts)?, spec, k)?)
                    }
                    None => None,
                };
                Classifiers::Separate { vanilla: Classifier::new(vanilla, &manifest.vanilla, k)?, context_branch }
            }
        };
        let bundle = Bundle { manifest, detector, classifiers };
        tracing::debug!(
            bundle = %bundle.manifest.name,
            version = %bundle.manifest.version,
            sha256 = %&bundle.manifest.sha256[..12],
            debias = if bundle.debias() { "on" } else { "off (no context branch: events carry factual scores)" },
            clef = if bundle.fused() { "in the fused graph" } else { "on the host" },
            "loaded engine bundle"
        );
        Ok(bundle)
    }

    /// Whether events carry a TIE (the bundle has a context branch).
    pub fn debias(&self) -> bool {
        match &self.classifiers {
            Classifiers::Separate { context_branch, .. } => context_branch.is_some(),
            Classifiers::Fused(_) => true,
        }
    }

    /// Whether CLEF is computed inside the engine (the fused graph).
    pub fn fused(&self) -> bool {
        matches!(self.classifiers, Classifiers::Fused(_))
    }

    /// The execution provider the classifiers run on: where most of the time goes.
    pub fn provider(&self) -> &str {
        match &self.classifiers {
            Classifiers::Separate { vanilla, .. } => vanilla.provider(),
            Classifiers::Fused(fused) => fused.provider(),
        }
    }

    /// Each classifier model by name with the execution provider it runs on.
    pub fn classifier_providers(&self) -> Vec<(&'static str, &str)> {
        match &self.classifiers {
            Classifiers::Separate { vanilla, context_branch } => {
                let mut out = vec![("vanilla", vanilla.provider())];
                out.extend(context_branch.as_ref().map(|c| ("context_branch", c.provider())));
                out
            }
            Classifiers::Fused(fused) => vec![("fused", fused.provider())],
        }
    }
}
