//! Engine acceptance: before a bundle serves, each of its models (and the fused CLEF graph)
//! runs the bundle's golden vectors ([`super::golden`]) on the provider and precision it
//! got and must reproduce the FP32 reference: outputs within the manifest's tolerances
//! (`[acceptance]`), the same decisions. A deviation is measured relative to the size of
//! the reference: the largest absolute difference in an output of a vector divided by
//! `max(1, max|reference|)` of that output, so a model with logits near 30 is held to the
//! same relative precision as one with logits near 3. A NaN, a missing reference or a
//! missing output fails the check; nothing is accepted without a comparison. TensorRT's FP16 kernels, a provider build that
//! computes differently, or a model file that is not what it claims are caught here, not
//! in the field, where CLEF's subtraction of two nearly equal terms turns a small error
//! into a wrong emotion.
//!
//! On failure the next choice is tried, in order: TensorRT FP16 → TensorRT FP32 → CUDA →
//! CPU (within `engine.providers`), and before each step down a bundle with a fused graph
//! tries CLEF on the host with its backbones where they are. When nothing passes, the
//! bundle is refused with every attempt's numbers. Each outcome is kept for `/metrics`
//! (`clefd_engine_acceptance`), `/healthz` and `clefd doctor`.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use super::classifier::{Classifier, Subject, SubjectBoxes};
use super::golden::{self, Golden, GoldenError};
use super::manifest::Manifest;
use super::runtime::{Require, SessionOptions};
use super::tensorrt::Precision;
use super::{Bundle, BundleError, Classifiers, ClefPlacement};
use crate::clef;

/// Why a bundle cannot be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptanceError {
    /// The golden vectors themselves are unusable or stale.
    #[error(transparent)]
    Golden(#[from] GoldenError),
    /// No provider and precision reproduced the golden vectors.
    #[error("bundle {bundle} refused: no execution provider and precision reproduces its golden vectors: {tried}")]
    Refused {
        /// The bundle's name.
        bundle: String,
        /// Every attempt, with its numbers.
        tried: String,
    },
    /// `engine.require` names a GPU provider that loads, but none of the choices it allows
    /// reproduces the golden vectors, and the next one down the chain (the CPU, where the
    /// reference was made) is ruled out: the required provider cannot be had, as when it
    /// does not load at all (`run` exits 69 for both).
    #[error(
        "engine.require = \"{require}\" cannot be met: bundle {bundle}: no choice it allows reproduces the golden \
         vectors: {tried}; {remedy}"
    )]
    Required {
        /// The requirement (`gpu`, `tensorrt`, `cuda`).
        require: &'static str,
        /// The bundle's name.
        bundle: String,
        /// Every rejected attempt: model, provider, precision, worst deviation, tolerance.
        tried: String,
        /// What to do.
        remedy: String,
    },
}

/// The worst disagreement a check saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    /// Which output (`y_e`, `y_c`, `factual`, `counterfactual`, `debiased`).
    pub output: &'static str,
    /// Which vector (`tensor 2`, `picture 1`).
    pub vector: String,
    /// Largest absolute difference from the reference (NaN when an output was NaN,
    /// infinite when it had the wrong length).
    pub max_abs: f32,
    /// The reference's scale: `max(1, max|reference|)` of that output in that vector.
    pub scale: f32,
    /// The tolerance it is held to, relative to `scale`.
    pub limit: f32,
}

impl Deviation {
    /// `max_abs / scale`, what is held to `limit`; infinite for a NaN.
    pub fn relative(&self) -> f32 {
        if self.max_abs.is_nan() { f32::INFINITY } else { self.max_abs / self.scale }
    }

    /// Whether it is within its tolerance (never for a NaN).
    pub fn within(&self) -> bool {
        self.relative() <= self.limit
    }
}

impl std::fmt::Display for Deviation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "relative deviation {:.3e} (max abs {:.3e} on a scale of {:.3}) in {} at {}, tolerance {:.1e}",
            self.relative(),
            self.max_abs,
            self.scale,
            self.output,
            self.vector,
            self.limit
        )
    }
}

/// One model's verdict on one provider and precision.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// `vanilla`, `context_branch`, `fused`, or `clef_host` (CLEF computed on the host).
    pub model: &'static str,
    /// Execution provider (`host` for CLEF on the host).
    pub provider: String,
    /// `fp16`, `fp32` or `int8`.
    pub precision: &'static str,
    /// The largest deviation relative to its tolerance, over every output and vector.
    pub worst: Option<Deviation>,
    /// The largest batch the model was run with (`min(vectors, engine.batch_max)`).
    pub batch: usize,
    /// Why it failed; `None` when accepted.
    pub failure: Option<String>,
}

impl Check {
    /// Whether the model reproduced the reference.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} {}: ", self.model, self.provider, self.precision)?;
        match (&self.failure, &self.worst) {
            (Some(why), _) => write!(f, "rejected: {why}"),
            (None, Some(d)) => write!(f, "accepted ({d})"),
            (None, None) => write!(f, "accepted"),
        }
    }
}

struct Compare {
    check: Check,
}

impl Compare {
    fn new(model: &'static str, provider: &str, precision: &'static str) -> Compare {
        Compare { check: Check { model, provider: provider.into(), precision, worst: None, batch: 0, failure: None } }
    }

    fn fail(&mut self, why: String) {
        if self.check.failure.is_none() {
            self.check.failure = Some(why);
        }
    }

    /// Compares one output of one vector with its reference; a missing reference fails
    /// (the golden set would otherwise accept that output unseen).
    fn values(&mut self, output: &'static str, vector: &str, got: &[f32], want: Option<&Vec<f32>>, limit: f32) {
        let Some(want) = want else {
            self.fail(format!("the golden set has no {output} reference for {vector}: nothing to compare with"));
            return;
        };
        let max_abs = if got.len() == want.len() && !got.is_empty() {
            // A NaN anywhere is the worst deviation there is, and stays so.
            got.iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, |m, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) })
        } else {
            f32::INFINITY
        };
        let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
        let dev = Deviation { output, vector: vector.into(), max_abs, scale, limit };
        let ratio = |d: &Deviation| d.relative() / d.limit;
        if self.check.worst.as_ref().is_none_or(|w| ratio(&dev) > ratio(w)) {
            self.check.worst = Some(dev);
        }
    }

    /// The verdict: the worst deviation relative to its tolerance when that is over it,
    /// then anything else that failed (a decision, a run).
    fn finish(mut self) -> Check {
        if let Some(d) = &self.check.worst {
            if !d.within() {
                let why = format!(
                    "{} deviates by {:.3e} relative (max abs {:.3e} on a scale of {:.3}; tolerance {:.1e}) at {}",
                    d.output,
                    d.relative(),
                    d.max_abs,
                    d.scale,
                    d.limit,
                    d.vector
                );
                self.check.failure = Some(match self.check.failure.take() {
                    Some(other) => format!("{why}; {other}"),
                    None => why,
                });
            }
        }
        self.check
    }

    fn decision(&mut self, task: &clef::Task, vector: &str, logits: &[f32], want: &golden::Reference) {
        let got = task.decide(logits);
        if got.top != want.top || got.active != want.active {
            self.fail(format!(
                "decision differs at {vector}: label {} {:?}, the reference says {} {:?}",
                got.top, got.active, want.top, want.active
            ));
        }
    }
}

fn precision_of(provider: &str, opts: &SessionOptions) -> &'static str {
    match (provider, &opts.tensorrt.precision) {
        ("tensorrt", Precision::Fp16) => "fp16",
        ("tensorrt", Precision::Int8 { .. }) => "int8",
        _ => "fp32",
    }
}

/// Each output of each vector, from the tensors then from the pictures: `(label, values)`.
type Rows = Vec<(String, Vec<f32>)>;

/// The largest batch the golden set runs in: never more than `engine.batch_max`, which a
/// TensorRT engine's optimisation profile ends at.
fn batch_for(golden: &Golden, opts: &SessionOptions) -> usize {
    golden.vectors.len().min(opts.tensorrt.batch_max).max(1)
}

fn rows(
    classifier: &mut Classifier,
    section: &str,
    golden: &Golden,
    manifest: &Manifest,
    batch: usize,
) -> Result<Rows, String> {
    let n = golden.vectors.len();
    let tensors = golden.inputs.get(section).ok_or_else(|| format!("the golden set has no inputs for {section}"))?;
    let mut out: Rows = Vec::with_capacity(2 * n);
    let from_tensors = classifier.classify_tensors(tensors, n, batch).map_err(|e| e.to_string())?;
    out.extend(from_tensors.into_iter().enumerate().map(|(i, v)| (format!("tensor {}", i + 1), v)));
    let views: Vec<_> = golden.pictures.iter().map(|p| p.view()).collect();
    let subjects: Vec<Subject<'_>> = views
        .iter()
        .enumerate()
        .map(|(i, frame)| Subject { frame, boxes: SubjectBoxes::from_face(golden.face(i), &manifest.subject) })
        .collect();
    let from_pictures = classifier.classify(&subjects, batch).map_err(|e| e.to_string())?;
    out.extend(from_pictures.into_iter().enumerate().map(|(i, v)| (format!("picture {}", i + 1), v)));
    if out.len() != 2 * n {
        return Err(format!("{section} gave {} results for {} golden runs", out.len(), 2 * n));
    }
    Ok(out)
}

/// Runs the golden set through every classifier of `bundle` and returns one check per
/// model (plus `clef_host` where CLEF runs on the host). `opts` names the precision.
pub fn check(bundle: &mut Bundle, golden: &Golden, opts: &SessionOptions) -> Vec<Check> {
    let manifest = bundle.manifest.clone();
    let tol = &manifest.acceptance;
    let task = manifest.clef_task();
    let n = golden.vectors.len();
    let want = |i: usize| &golden.vectors[i % n];
    let batch = batch_for(golden, opts);
    let mut checks = Vec::new();
    match &mut bundle.classifiers {
        Classifiers::Fused(fused) => {
            let provider = fused.provider().to_string();
            let mut c = Compare::new("fused", &provider, precision_of(&provider, opts));
            match rows(fused, "fused", golden, &manifest, batch) {
                Ok(rows) => {
                    let k = manifest.labels.len();
                    for (i, (label, v)) in rows.iter().enumerate() {
                        let part = |j: usize| v.get(j * k..(j + 1) * k).unwrap_or(&[]);
                        let r = want(i);
                        c.values("y_e", label, part(0), Some(&r.y_e), tol.logits);
                        c.values("y_c", label, part(1), r.y_c.as_ref(), tol.logits);
                        c.values("factual", label, part(2), r.factual.as_ref(), tol.logits);
                        c.values("counterfactual", label, part(3), r.counterfactual.as_ref(), tol.logits);
                        c.values("debiased", label, part(4), r.debiased.as_ref(), tol.debiased);
                        c.decision(&task, label, part(4), r);
                    }
                }
                Err(e) => c.fail(e),
            }
            c.check.batch = fused.largest_batch();
            checks.push(c.finish());
        }
        Classifiers::Separate { vanilla, context_branch } => {
            let provider = vanilla.provider().to_string();
            let mut cv = Compare::new("vanilla", &provider, precision_of(&provider, opts));
            let y_e = rows(vanilla, "vanilla", golden, &manifest, batch).map_err(|e| cv.fail(e)).unwrap_or_default();
            for (i, (label, v)) in y_e.iter().enumerate() {
                cv.values("y_e", label, v, Some(&want(i).y_e), tol.logits);
                if context_branch.is_none() {
                    cv.decision(&task, label, v, want(i));
                }
            }
            cv.check.batch = vanilla.largest_batch();
            checks.push(cv.finish());
            if let Some(cb) = context_branch {
                let provider = cb.provider().to_string();
                let mut cc = Compare::new("context_branch", &provider, precision_of(&provider, opts));
                let y_c =
                    rows(cb, "context_branch", golden, &manifest, batch).map_err(|e| cc.fail(e)).unwrap_or_default();
                for (i, (label, v)) in y_c.iter().enumerate() {
                    cc.values("y_c", label, v, want(i).y_c.as_ref(), tol.logits);
                }
                cc.check.batch = cb.largest_batch();
                checks.push(cc.finish());
                let mut ch = Compare::new("clef_host", "host", "fp32");
                if y_e.is_empty() || y_e.len() != y_c.len() {
                    ch.fail("the models gave no logits to fuse".into());
                }
                for (i, ((label, e), (_, c))) in y_e.iter().zip(&y_c).enumerate() {
                    match clef::effects(manifest.fusion, c, e, manifest.counterfactual_e.as_slice()) {
                        Ok(fx) => {
                            let r = want(i);
                            ch.values("factual", label, &fx.factual, r.factual.as_ref(), tol.logits);
                            ch.values(
                                "counterfactual",
                                label,
                                &fx.counterfactual,
                                r.counterfactual.as_ref(),
                                tol.logits,
                            );
                            ch.values("debiased", label, &fx.tie, r.debiased.as_ref(), tol.debiased);
                            ch.decision(&task, label, &fx.tie, r);
                        }
                        Err(e) => ch.fail(e.to_string()),
                    }
                }
                checks.push(ch.finish());
            }
        }
    }
    checks
}

/// The choices in order of preference for `opts`: TensorRT in its precision, TensorRT
/// FP32, then each later provider of `engine.providers` (never one it leaves out).
pub fn candidates(opts: &SessionOptions) -> Vec<SessionOptions> {
    let mut out = Vec::new();
    for i in 0..opts.providers.len() {
        let mut o = SessionOptions { providers: opts.providers[i..].to_vec(), ..opts.clone() };
        out.push(o.clone());
        if o.providers[0] == "tensorrt" && o.tensorrt.precision != Precision::Fp32 {
            o.tensorrt.precision = Precision::Fp32;
            out.push(o);
        }
    }
    out
}

/// A bundle that passed, with every check made on the way (failed attempts first).
#[derive(Debug)]
pub struct Accepted {
    /// The bundle, loaded where it passed.
    pub bundle: Bundle,
    /// Every check of every attempt, in order.
    pub checks: Vec<Check>,
    /// Whether it runs on a later choice than the first.
    pub fell_back: bool,
}

/// What an earlier lane or start chose for a bundle and settings: later lanes load the
/// same without running the vectors again (same model, provider and precision: same numbers).
struct Chosen {
    key: String,
    opts: SessionOptions,
    placement: ClefPlacement,
}

static CHOSEN: Mutex<Vec<Chosen>> = Mutex::new(Vec::new());
/// Bundles × settings remembered at most (a reload with new settings adds one).
const CHOSEN_MAX: usize = 64;

/// The manifest, every model file's sha256 (a model replaced in place is checked again),
/// the providers, `engine.require` (a choice made under `any` may be one a stricter
/// requirement rules out), the TensorRT settings, and where CLEF runs.
fn key(manifest: &Manifest, digests: &[(&str, String)], opts: &SessionOptions, placement: ClefPlacement) -> String {
    format!(
        "{}|{}|{digests:?}|{:?}|{:?}|{:?}|{:?}",
        manifest.dir.display(),
        manifest.sha256,
        opts.providers,
        opts.require,
        opts.tensorrt,
        placement
    )
}

/// Loads `dir` (CLEF where `placement` says) on the first choice that reproduces the
/// bundle's golden vectors, logging each failure with its numbers; a bundle without
/// golden vectors loads as before, with a warning. ONNX Runtime must be initialised.
pub fn load(dir: &Path, opts: &SessionOptions, placement: ClefPlacement) -> Result<Accepted, BundleError> {
    let manifest = Manifest::load(dir)?;
    let digests = match golden::model_digests(&manifest) {
        Ok(d) => d,
        Err(e) => {
            // A model that does not load says so first.
            Bundle::load_placed(dir, opts, placement)?;
            return Err(AcceptanceError::from(e).into());
        }
    };
    let key = key(&manifest, &digests, opts, placement);
    if let Some((o, p)) =
        CHOSEN.lock().ok().and_then(|c| c.iter().find(|c| c.key == key).map(|c| (c.opts.clone(), c.placement)))
    {
        let hit = SessionOptions { threads: opts.threads, require: opts.require, cache_only: opts.cache_only, ..o };
        let bundle = Bundle::load_placed(dir, &hit, p)?;
        return Ok(Accepted { bundle, checks: Vec::new(), fell_back: false });
    }
    let started = Instant::now();
    let Some(golden) = Golden::load(dir, manifest.labels.len()).map_err(AcceptanceError::from)? else {
        let bundle = Bundle::load_placed(dir, opts, placement)?;
        tracing::warn!(
            bundle = %manifest.name,
            "the bundle has no golden vectors: its numbers on this provider are not verified (add them with `python -m clef_kit.golden {}`)",
            dir.display()
        );
        for (model, provider) in bundle.classifier_providers() {
            let precision = precision_of(provider, opts);
            let detail = format!("{model} on {provider} {precision}: unverified (no golden vectors)");
            record(&manifest.name, model, provider, precision, "unverified", detail);
        }
        return Ok(Accepted { bundle, checks: Vec::new(), fell_back: false });
    };
    if let Err(stale) = golden::check_models(&golden, &manifest, &digests) {
        // A model that does not load says so first; one that does is refused as unproven.
        Bundle::load_placed(dir, opts, placement)?;
        return Err(AcceptanceError::from(stale).into());
    }
    let mut checking = std::time::Duration::ZERO;
    let placements: Vec<ClefPlacement> = match (placement, manifest.fused.is_some()) {
        (ClefPlacement::Engine, true) => vec![ClefPlacement::Engine, ClefPlacement::Host],
        _ => vec![placement],
    };
    let mut tried: Vec<String> = Vec::new();
    let mut checks = Vec::new();
    let mut attempts = 0;
    // Why choices did not load, the first (the fullest provider list) first.
    let mut unloaded: Vec<BundleError> = Vec::new();
    // A choice with no provider `engine.require` accepts (the CPU alone under "gpu") cannot
    // load; trying it would only log a misleading "lists no provider that meets it".
    let allowed = candidates(opts).into_iter().filter(|c| c.providers.iter().any(|p| opts.require.accepts(p)));
    for candidate in allowed {
        for &place in &placements {
            let mut bundle = match Bundle::load_placed(dir, &candidate, place) {
                Ok(b) => b,
                // A cache-only load never falls to a later choice the service would not take.
                Err(e) if e.not_built() => return Err(e),
                Err(e) => {
                    tracing::warn!(bundle = %manifest.name, providers = ?candidate.providers, "{e}");
                    unloaded.push(e);
                    continue;
                }
            };
            let what = format!("{:?} {}", bundle.classifier_providers(), precision_of(bundle.provider(), &candidate));
            if tried.contains(&what) {
                continue;
            }
            tried.push(what);
            attempts += 1;
            let t = Instant::now();
            let these = check(&mut bundle, &golden, &candidate);
            checking += t.elapsed();
            for c in &these {
                let detail = c.to_string();
                let result = if c.passed() { "accepted" } else { "rejected" };
                record(&manifest.name, c.model, &c.provider, c.precision, result, detail.clone());
                if !c.passed() {
                    tracing::warn!(bundle = %manifest.name, "engine acceptance: {detail}; trying the next choice");
                }
            }
            let passed = these.iter().all(Check::passed);
            checks.extend(these);
            if passed {
                let fell_back = attempts > 1;
                let summary = checks.iter().rev().take_while(|c| c.passed()).map(|c| c.to_string());
                let summary = summary.collect::<Vec<_>>().join("; ");
                let (ms, runs) = (started.elapsed().as_secs_f64() * 1e3, checking.as_secs_f64() * 1e3);
                if fell_back {
                    tracing::warn!(bundle = %manifest.name, "engine acceptance passed only on a later choice ({runs:.1} ms running the golden vectors, {ms:.0} ms with loading): {summary}");
                } else {
                    tracing::info!(bundle = %manifest.name, "engine acceptance passed ({runs:.1} ms running the golden vectors, {ms:.0} ms with loading): {summary}");
                }
                if let Ok(mut c) = CHOSEN.lock() {
                    if c.len() >= CHOSEN_MAX {
                        c.remove(0);
                    }
                    c.push(Chosen { key, opts: candidate.clone(), placement: place });
                }
                return Ok(Accepted { bundle, checks, fell_back });
            }
        }
    }
    if checks.is_empty() {
        // Nothing loaded, so nothing was compared: the load's own error says why (an unmet
        // engine.require stays that, with the library and what to install, not a refusal
        // of the numbers).
        if let Some(first) = unloaded.into_iter().next() {
            return Err(first);
        }
    }
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed()).map(Check::to_string).collect();
    let tried = if failed.is_empty() { "no choice could load it".to_string() } else { failed.join("; ") };
    if opts.require != Require::Any {
        let remedy = required_remedy(opts.require, dir);
        return Err(
            AcceptanceError::Required { require: opts.require.as_str(), bundle: manifest.name, tried, remedy }.into()
        );
    }
    Err(AcceptanceError::Refused { bundle: manifest.name.clone(), tried }.into())
}

/// What to do when the providers `require` allows load `dir` but none reproduces its
/// golden vectors: find out whether the GPU or the bundle is at fault, then fix that, or
/// run on the CPU after all.
fn required_remedy(require: Require, dir: &Path) -> String {
    // The providers it rules out, the CPU (where the reference was made) last.
    let excluded: Vec<&str> = ["tensorrt", "cuda"].into_iter().filter(|p| !require.accepts(p)).collect();
    let excluded = excluded.iter().map(|p| format!("{p}, ")).collect::<String>();
    format!(
        "engine.require = \"{}\" rules out {excluded}the CPU, where the reference was made. To tell the GPU from the \
         bundle, run `sudo -u clefd env CLEFD__ENGINE__REQUIRE=any clefd build-engines` (as the service's user, so \
         that the engine cache stays its own): if the CPU reproduces the vectors, this machine's \
         ONNX Runtime, CUDA or TensorRT computes differently (install the build made for this JetPack, see README, \
         Jetson), or the deviation is one you accept (raise [acceptance] logits or debiased in {}); if the CPU \
         fails too, the golden vectors are not this bundle's (make them again with `python -m clef_kit.golden {}`); \
         {}",
        require.as_str(),
        dir.join("manifest.toml").display(),
        dir.display(),
        super::runtime::allow_any()
    )
}

/// One acceptance outcome, as `/metrics`, `/healthz` and `doctor` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Bundle name.
    pub bundle: String,
    /// Model (`vanilla`, `context_branch`, `fused`, `clef_host`).
    pub model: String,
    /// Execution provider.
    pub provider: String,
    /// Precision.
    pub precision: String,
    /// `accepted`, `rejected` or `unverified` (no golden vectors).
    pub result: &'static str,
    /// The check with its numbers.
    pub detail: String,
}

static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());
/// Outcomes kept at most: bundles × models × choices is far fewer.
const RECORDS_MAX: usize = 256;

fn record(bundle: &str, model: &str, provider: &str, precision: &str, result: &'static str, detail: String) {
    let Ok(mut records) = RECORDS.lock() else { return };
    let same =
        |r: &Record| r.bundle == bundle && r.model == model && r.provider == provider && r.precision == precision;
    records.retain(|r| !same(r));
    if records.len() >= RECORDS_MAX {
        records.remove(0);
    }
    records.push(Record {
        bundle: bundle.into(),
        model: model.into(),
        provider: provider.into(),
        precision: precision.into(),
        result,
        detail,
    });
}

/// Every acceptance outcome of this process, oldest first.
pub fn records() -> Vec<Record> {
    RECORDS.lock().map(|r| r.clone()).unwrap_or_default()
}

/// One line per outcome, bundle first, for `/healthz`.
pub fn summary() -> Vec<String> {
    records().iter().map(|r| format!("{}: {}", r.bundle, r.detail)).collect()
}

/// What acceptance found for `bundle`, in one line, for `clefd doctor`: the outcomes of
/// the choice it runs on (accepted or unverified), after any that were rejected.
pub fn verdict(bundle: &str) -> String {
    let lines: Vec<String> = records().into_iter().filter(|r| r.bundle == bundle).map(|r| r.detail).collect();
    if lines.is_empty() { "not run".into() } else { lines.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(got: &[f32], want: Option<&Vec<f32>>) -> Check {
        let mut c = Compare::new("vanilla", "cpu", "fp32");
        c.values("y_e", "tensor 1", &[1.0, 2.0], Some(&vec![1.0, 2.0]), 1e-3);
        c.values("debiased", "tensor 2", got, want, 1e-3);
        c.finish()
    }

    #[test]
    fn a_nan_output_fails_whatever_the_tolerance() {
        let want = vec![1.0, 2.0];
        assert!(compare(&[1.0, 2.0], Some(&want)).passed());
        for got in [[f32::NAN, 2.0], [1.0, f32::NAN], [f32::INFINITY, 2.0]] {
            let c = compare(&got, Some(&want));
            println!("{c}");
            assert!(!c.passed(), "{got:?}: {c}");
            assert!(c.to_string().contains("debiased deviates by"), "{c}");
        }
        // Missing or extra values are no better.
        assert!(!compare(&[1.0], Some(&want)).passed());
        assert!(!compare(&[], Some(&vec![])).passed());
    }

    #[test]
    fn an_output_without_a_reference_fails() {
        let c = compare(&[1.0, 2.0], None);
        println!("{c}");
        assert!(c.failure.as_deref().is_some_and(|f| f.contains("no debiased reference")), "{c}");
    }

    #[test]
    fn deviations_are_relative_to_the_reference_scale() {
        // 1e-2 on logits near 30 is 3.3e-4 relative; the same 1e-2 on logits below 1 is 1e-2.
        let mut c = Compare::new("fused", "cpu", "fp32");
        c.values("y_e", "tensor 1", &[30.01, -5.0], Some(&vec![30.0, -5.0]), 5e-4);
        let big = c.finish();
        let d = big.worst.as_ref().expect("measured");
        assert!(big.passed() && (d.scale - 30.0).abs() < 1e-6 && (d.relative() - 1e-2 / 30.0).abs() < 1e-5, "{big}");
        let mut c = Compare::new("fused", "cpu", "fp32");
        c.values("y_e", "tensor 1", &[0.51, 0.2], Some(&vec![0.5, 0.2]), 5e-4);
        let small = c.finish();
        assert!(!small.passed() && small.worst.as_ref().is_some_and(|d| d.scale == 1.0), "{small}");
    }
}
