//! A bundle's golden vectors (`golden/`, written by `clef_kit.golden`): reference inputs
//! with the FP32 outputs ONNX Runtime's CPU provider gave for them, so every start can
//! prove that the provider and precision it got still give the bundle's numbers.
//!
//! They lie beside the models (so whatever copies a bundle's files copies them too):
//! `golden.json` names the others; `golden-pictures.npy` (uint8, N×H×W×3) holds whole
//! pictures for the whole preprocessing, and `golden-<section>.<input>.npy` (float32,
//! N×shape) the same subjects' input tensors as the preprocessing builds them, for each
//! model alone.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::manifest::Manifest;
use crate::image::{Rect, RgbImage};

/// The index file inside a bundle.
pub const FILE: &str = "golden.json";
/// The format `golden.json` declares.
pub const FORMAT: &str = "clefd.golden/1";
/// No golden file is read past this: the set is a few hundred KB by design, so a larger
/// file is a mistake, and memory stays bounded whatever lies in the folder.
const MAX_FILE: u64 = 16 << 20;
/// No model file is hashed past this (ONNX caps a model at 2 GB; its weights may lie
/// beside it, but a bundle's own file larger than this is not a model).
const MAX_MODEL: u64 = 4 << 30;

/// A golden file that cannot be used, naming the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("golden vectors {path}: {reason}")]
pub struct GoldenError {
    /// The file at fault.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A model file the vectors were made for.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelRef {
    /// ONNX file, relative to the bundle.
    pub file: PathBuf,
    /// Its sha256 when the vectors were made.
    pub sha256: String,
}

/// One vector's reference numbers (K values each; absent where the bundle has no context branch).
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// The subject's face box in its picture.
    pub face: [f32; 4],
    /// Vanilla logits.
    pub y_e: Vec<f32>,
    /// Context-branch logits.
    pub y_c: Option<Vec<f32>>,
    /// φ(Y_c, Y_e).
    pub factual: Option<Vec<f32>>,
    /// φ(Y_c, Y_e*).
    pub counterfactual: Option<Vec<f32>>,
    /// The TIE.
    pub debiased: Option<Vec<f32>>,
    /// The decided label.
    pub top: usize,
    /// Multi-label: the active labels.
    #[serde(default)]
    pub active: Vec<usize>,
}

#[derive(Deserialize)]
struct File {
    format: String,
    #[serde(default)]
    reference: String,
    labels: usize,
    models: BTreeMap<String, ModelRef>,
    pictures: PathBuf,
    inputs: BTreeMap<String, BTreeMap<String, PathBuf>>,
    vectors: Vec<Reference>,
}

/// The golden set of a bundle, loaded.
#[derive(Debug)]
pub struct Golden {
    /// Where the reference numbers came from.
    pub reference: String,
    /// Per section (`vanilla`, `context_branch`, `fused`): the model file it was made for.
    pub models: BTreeMap<String, ModelRef>,
    /// Whole pictures, one per vector.
    pub pictures: Vec<RgbImage>,
    /// Per section, its input tensors by input name: every vector's values in turn.
    pub inputs: BTreeMap<String, Vec<(String, Vec<f32>)>>,
    /// The reference numbers, one per vector.
    pub vectors: Vec<Reference>,
}

impl Golden {
    /// Reads the golden files of the bundle in `dir`; `Ok(None)` when the bundle has none (an older bundle: give it
    /// some with `python -m clef_kit.golden DIR`).
    pub fn load(dir: &Path, labels: usize) -> Result<Option<Golden>, GoldenError> {
        let folder = dir;
        let json = dir.join(FILE);
        if !json.exists() {
            return Ok(None);
        }
        let err = |reason: String| GoldenError { path: json.display().to_string(), reason };
        let file: File = serde_json::from_slice(&read_capped(&json)?).map_err(|e| err(e.to_string()))?;
        if file.format != FORMAT {
            return Err(err(format!("format '{}', this clefd reads '{FORMAT}'", file.format)));
        }
        if file.labels != labels {
            return Err(err(format!("made for {} labels, the manifest has {labels}", file.labels)));
        }
        let n = file.vectors.len();
        if n == 0 {
            return Err(err("no vectors".into()));
        }
        // With a context branch every vector needs every CLEF output, without one none: an
        // output with no reference would be accepted without a comparison.
        let debias = file.models.contains_key("context_branch");
        for (i, v) in file.vectors.iter().enumerate() {
            let clef = [&v.y_c, &v.factual, &v.counterfactual, &v.debiased];
            let lens =
                [Some(&v.y_e), v.y_c.as_ref(), v.factual.as_ref(), v.counterfactual.as_ref(), v.debiased.as_ref()];
            if lens.iter().flatten().any(|x| x.len() != labels)
                || v.top >= labels
                || v.active.iter().any(|&a| a >= labels)
            {
                return Err(err(format!("vector {} does not hold {labels} values per output", i + 1)));
            }
            if lens.iter().flatten().any(|x| x.iter().any(|f| !f.is_finite())) || v.face.iter().any(|f| !f.is_finite())
            {
                return Err(err(format!("vector {} holds a value that is not a finite number", i + 1)));
            }
            if clef.iter().any(|o| o.is_some() != debias) {
                let why = if debias { "lacks a reference (null) for" } else { "has references for" };
                return Err(err(format!(
                    "vector {} {why} y_c, factual, counterfactual or debiased, but the set is made {} a context branch",
                    i + 1,
                    if debias { "with" } else { "without" }
                )));
            }
        }
        for (section, m) in &file.models {
            inside(&m.file).map_err(|why| err(format!("models.{section}.file: {why}")))?;
        }
        let pictures_path = inside(&file.pictures).map_err(|why| err(format!("pictures: {why}")))?;
        let (pictures, shape) = read_npy(&folder.join(pictures_path), Dtype::U8)?;
        let pictures = match (pictures, &shape[..]) {
            (Data::U8(data), &[m, h, w, 3]) if m == n => {
                data.chunks_exact(h * w * 3).map(|c| RgbImage { data: c.to_vec(), width: w, height: h }).collect()
            }
            _ => return Err(err(format!("pictures are shaped {shape:?}, expected {n}×H×W×3"))),
        };
        let mut inputs = BTreeMap::new();
        for (section, names) in &file.inputs {
            let mut tensors = Vec::new();
            for (name, path) in names {
                let path = inside(path).map_err(|why| err(format!("inputs.{section}.{name}: {why}")))?;
                let (data, shape) = read_npy(&folder.join(path), Dtype::F32)?;
                let Data::F32(data) = data else { return Err(err(format!("{}: not float32", path.display()))) };
                if shape.first() != Some(&n) {
                    return Err(err(format!("{} holds {shape:?}, expected {n} samples", path.display())));
                }
                tensors.push((name.clone(), data));
            }
            inputs.insert(section.clone(), tensors);
        }
        Ok(Some(Golden { reference: file.reference, models: file.models, pictures, inputs, vectors: file.vectors }))
    }

    /// Vector `i`'s face box.
    pub fn face(&self, i: usize) -> Rect {
        let [x, y, w, h] = self.vectors[i].face;
        Rect { x, y, w, h }
    }
}

/// sha256 of each model file the manifest names, by section (`vanilla`,
/// `context_branch`, `fused`), read in pieces (memory stays bounded) and refused past
/// 4 GB: what the golden vectors were made for, and what the acceptance cache is keyed on.
pub fn model_digests(manifest: &Manifest) -> Result<Vec<(&'static str, String)>, GoldenError> {
    let mut files = vec![("vanilla", &manifest.vanilla.file)];
    if let Some(cb) = &manifest.context_branch {
        files.push(("context_branch", &cb.file));
    }
    if let Some(fused) = &manifest.fused {
        files.push(("fused", &fused.file));
    }
    files.into_iter().map(|(section, file)| Ok((section, hash_file(&manifest.dir.join(file))?))).collect()
}

/// Whether the model files the manifest names (`digests`, from [`model_digests`]) are
/// still those the vectors were made for: `Err` names the first that changed (its
/// vectors would prove nothing about it) or that the vectors do not cover.
pub fn check_models(golden: &Golden, manifest: &Manifest, digests: &[(&str, String)]) -> Result<(), GoldenError> {
    let dir = &manifest.dir;
    let err = |reason: String| GoldenError { path: dir.join(FILE).display().to_string(), reason };
    for (section, sha) in digests {
        let Some(m) = golden.models.get(*section) else {
            return Err(err(format!(
                "names no model for [{section}], which the manifest has: run `python -m clef_kit.golden {}`",
                dir.display()
            )));
        };
        if *sha != m.sha256 {
            return Err(err(format!(
                "made for another {} ({section}): the model changed since; run `python -m clef_kit.golden {}`",
                m.file.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `path` when it is relative and stays inside the bundle (no root, no `..`).
fn inside(path: &Path) -> Result<&Path, String> {
    if path.as_os_str().is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("'{}' is not a plain path inside the bundle", path.display()));
    }
    Ok(path)
}

fn hash_file(path: &Path) -> Result<String, GoldenError> {
    use sha2::Digest;
    let err = |reason: String| GoldenError { path: path.display().to_string(), reason };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot open ({e})")))?.take(MAX_MODEL + 1);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let got = f.read(&mut buf).map_err(|e| err(format!("cannot read ({e})")))?;
        if got == 0 {
            break;
        }
        total += got as u64;
        if total > MAX_MODEL {
            return Err(err(format!("larger than {} GB: not a model file", MAX_MODEL >> 30)));
        }
        hasher.update(&buf[..got]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn read_capped(path: &Path) -> Result<Vec<u8>, GoldenError> {
    let err = |reason: String| GoldenError { path: path.display().to_string(), reason };
    let f = std::fs::File::open(path).map_err(|e| err(format!("cannot open ({e})")))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(|e| err(format!("cannot read ({e})")))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(err(format!("larger than {} MB: not a golden set", MAX_FILE >> 20)));
    }
    Ok(bytes)
}

#[derive(Clone, Copy, PartialEq)]
enum Dtype {
    U8,
    F32,
}

enum Data {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// A C-order `.npy` array of `want` (uint8 or little-endian float32) and its shape.
fn read_npy(path: &Path, want: Dtype) -> Result<(Data, Vec<usize>), GoldenError> {
    let err = |reason: String| GoldenError { path: path.display().to_string(), reason };
    let bytes = read_capped(path)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("not a .npy file".into()));
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(err("cut short".into())),
    };
    let header = bytes.get(start..start + len).ok_or_else(|| err("header cut short".into()))?;
    let header = String::from_utf8_lossy(header);
    let descr = match want {
        Dtype::U8 => "'|u1'",
        Dtype::F32 => "'<f4'",
    };
    if !header.contains(&format!("'descr': {descr}")) || header.contains("'fortran_order': True") {
        return Err(err(format!("expected {descr} in C order, found {}", header.trim())));
    }
    let dims = header.split("'shape':").nth(1).and_then(|s| s.split(['(', ')']).nth(1));
    let dims = dims.ok_or_else(|| err(format!("no shape in its header {}", header.trim())))?;
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<usize>().map_err(|_| err(format!("shape ({dims}) holds '{v}', not a size"))))
        .collect::<Result<Vec<usize>, _>>()?;
    if shape.is_empty() || shape.contains(&0) {
        return Err(err(format!("shape {shape:?} holds no values (an empty or zero dimension)")));
    }
    let size = if want == Dtype::U8 { 1 } else { 4 };
    let bytes_needed = shape.iter().try_fold(size, |acc: usize, &d| acc.checked_mul(d));
    let body = &bytes[start + len..];
    if bytes_needed != Some(body.len()) {
        return Err(err(format!("shape {shape:?} does not match its {} bytes of data", body.len())));
    }
    Ok(match want {
        Dtype::U8 => (Data::U8(body.to_vec()), shape),
        Dtype::F32 => {
            (Data::F32(body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()), shape)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&u16::try_from(header.len()).expect("short header").to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    fn f32s(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    /// A one-vector, two-label golden set without a context branch: `edit` changes the JSON,
    /// `pictures` replaces the pictures file.
    fn bundle(edit: impl FnOnce(&mut serde_json::Value), pictures: Option<Vec<u8>>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut json = serde_json::json!({
            "format": FORMAT, "reference": "test", "labels": 2,
            "models": {"vanilla": {"file": "vanilla.onnx", "sha256": "00"}},
            "pictures": "golden-pictures.npy",
            "inputs": {"vanilla": {"face": "golden-vanilla.face.npy"}},
            "vectors": [{"face": [1.0, 1.0, 2.0, 2.0], "y_e": [1.0, -1.0], "y_c": null, "factual": null,
                         "counterfactual": null, "debiased": null, "top": 0, "active": []}],
        });
        edit(&mut json);
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&json).expect("json")).expect("write");
        let pictures = pictures.unwrap_or_else(|| npy("|u1", "(1, 4, 4, 3)", &[7; 48]));
        std::fs::write(dir.path().join("golden-pictures.npy"), pictures).expect("write");
        std::fs::write(dir.path().join("golden-vanilla.face.npy"), npy("<f4", "(1, 1, 2, 2)", &f32s(4))).expect("w");
        dir
    }

    fn refused(dir: &tempfile::TempDir) -> String {
        let e = Golden::load(dir.path(), 2).expect_err("refused").to_string();
        println!("{e}");
        e
    }

    #[test]
    fn a_well_formed_set_loads() {
        let g = Golden::load(bundle(|_| {}, None).path(), 2).expect("loads").expect("some");
        assert_eq!((g.pictures.len(), g.pictures[0].width, g.inputs["vanilla"][0].1.len()), (1, 4, 4));
    }

    #[test]
    fn a_truncated_npy_is_refused() {
        let mut cut = npy("|u1", "(1, 4, 4, 3)", &[7; 48]);
        cut.truncate(cut.len() - 5);
        assert!(refused(&bundle(|_| {}, Some(cut))).contains("does not match its 43 bytes"));
        let e = refused(&bundle(|_| {}, Some(b"\x93NUMPY\x02\x00\xff".to_vec())));
        assert!(e.contains("not a .npy file") || e.contains("cut short"), "{e}");
        let e = refused(&bundle(|_| {}, Some(b"\x93NUMPY\x01\x00\xff\x00{'descr'".to_vec())));
        assert!(e.contains("header cut short"), "{e}");
    }

    #[test]
    fn a_zero_or_overflowing_dimension_is_refused_not_a_panic() {
        let e = refused(&bundle(|_| {}, Some(npy("|u1", "(1, 0, 4, 3)", &[]))));
        assert!(e.contains("zero dimension"), "{e}");
        let e = refused(&bundle(|_| {}, Some(npy("|u1", "(1, 4294967296, 4294967296, 3)", &[7; 48]))));
        assert!(e.contains("does not match"), "{e}");
        // 1 × (2^62 + 4) × 4 × 3 wraps to 48, the bytes there are: unchecked, a 4×(2^62+4) picture.
        let e = refused(&bundle(|_| {}, Some(npy("|u1", "(1, 4611686018427387908, 4, 3)", &[7; 48]))));
        assert!(e.contains("does not match"), "{e}");
        let e = refused(&bundle(|_| {}, Some(npy("|u1", "(1, 4, x, 3)", &[7; 48]))));
        assert!(e.contains("not a size"), "{e}");
    }

    #[test]
    fn a_missing_reference_is_refused() {
        // A context branch without a TIE reference: the TIE would be accepted unseen.
        let e = refused(&bundle(
            |j| {
                j["models"]["context_branch"] = serde_json::json!({"file": "cb.onnx", "sha256": "00"});
                let v = &mut j["vectors"][0];
                for k in ["y_c", "factual", "counterfactual"] {
                    v[k] = serde_json::json!([0.5, 0.5]);
                }
            },
            None,
        ));
        assert!(e.contains("lacks a reference (null)"), "{e}");
        // A reference with a NaN (JSON cannot hold one; a huge number overflows f32 to inf).
        let e = refused(&bundle(|j| j["vectors"][0]["y_e"] = serde_json::json!([1e39, 0.0]), None));
        assert!(e.contains("not a finite number"), "{e}");
    }

    #[test]
    fn paths_outside_the_bundle_are_refused() {
        for bad in ["/etc/passwd", "../golden-pictures.npy", ""] {
            let e = refused(&bundle(|j| j["pictures"] = bad.into(), None));
            assert!(e.contains("not a plain path inside the bundle"), "{bad}: {e}");
        }
        let e = refused(&bundle(|j| j["models"]["vanilla"]["file"] = "/tmp/x.onnx".into(), None));
        assert!(e.contains("models.vanilla.file"), "{e}");
    }

    #[test]
    fn the_models_the_manifest_names_are_hashed_and_each_section_must_be_covered() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("engines/context-bias-demo");
        let manifest = Manifest::load(&dir).expect("manifest");
        let mut golden = Golden::load(&dir, manifest.labels.len()).expect("golden").expect("some");
        let digests = model_digests(&manifest).expect("digests");
        assert_eq!(digests.iter().map(|d| d.0).collect::<Vec<_>>(), ["vanilla", "context_branch", "fused"]);
        check_models(&golden, &manifest, &digests).expect("current");
        // golden.json naming another file with the right digest changes nothing: the manifest's file is hashed.
        golden.models.get_mut("vanilla").expect("vanilla").file = "elsewhere.onnx".into();
        check_models(&golden, &manifest, &digests).expect("the manifest's file is what counts");
        let mut stale = digests.clone();
        stale[1].1 = "0".repeat(64);
        let e = check_models(&golden, &manifest, &stale).expect_err("stale").to_string();
        assert!(e.contains("made for another") && e.contains("(context_branch)"), "{e}");
        golden.models.remove("fused");
        let e = check_models(&golden, &manifest, &digests).expect_err("a section missing").to_string();
        assert!(e.contains("names no model for [fused]"), "{e}");
    }
}
