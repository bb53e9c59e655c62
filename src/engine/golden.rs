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
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::image::{Rect, RgbImage};

/// The index file inside a bundle.
pub const FILE: &str = "golden.json";
/// The format `golden.json` declares.
pub const FORMAT: &str = "clefd.golden/1";
/// No golden file is read past this: the set is a few hundred KB by design, so a larger
/// file is a mistake, and memory stays bounded whatever lies in the folder.
const MAX_FILE: u64 = 16 << 20;

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
        for (i, v) in file.vectors.iter().enumerate() {
            let lens =
                [Some(&v.y_e), v.y_c.as_ref(), v.factual.as_ref(), v.counterfactual.as_ref(), v.debiased.as_ref()];
            if lens.iter().flatten().any(|x| x.len() != labels) || v.top >= labels {
                return Err(err(format!("vector {} does not hold {labels} values per output", i + 1)));
            }
        }
        let (pictures, shape) = read_npy(&folder.join(&file.pictures), Dtype::U8)?;
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

/// Whether the model files are still those the vectors were made for: `Err` names the
/// first that changed (its vectors would prove nothing about it).
pub fn check_models(golden: &Golden, dir: &Path) -> Result<(), GoldenError> {
    for (section, m) in &golden.models {
        let path = dir.join(&m.file);
        let bytes = read_model(&path)?;
        if super::sha256_hex(&bytes) != m.sha256 {
            return Err(GoldenError {
                path: dir.join(FILE).display().to_string(),
                reason: format!(
                    "made for another {} ({section}): the model changed since; run `python -m clef_kit.golden {}`",
                    m.file.display(),
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

fn read_model(path: &Path) -> Result<Vec<u8>, GoldenError> {
    std::fs::read(path).map_err(|e| GoldenError { path: path.display().to_string(), reason: e.to_string() })
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
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_default();
    let count: usize = shape.iter().product();
    let body = &bytes[start + len..];
    let size = if want == Dtype::U8 { 1 } else { 4 };
    if shape.is_empty() || body.len() != count * size {
        return Err(err(format!("shape {shape:?} does not match its {} bytes of data", body.len())));
    }
    Ok(match want {
        Dtype::U8 => (Data::U8(body.to_vec()), shape),
        Dtype::F32 => {
            (Data::F32(body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()), shape)
        }
    })
}
