//! Scoring a bundle against a labelled dataset: the numbers behind `clefd eval`.
//!
//! A dataset is a folder with `index.csv` (header `file,label,x,y,w,h`, more columns
//! ignored) and the pictures it names; `x,y,w,h` is the face box in pixels, as a detector
//! would give it, and `label` one label of the bundle (multi-label bundles: several,
//! separated by `;`). CAER-S and EMOTIC folders as distributed are read too
//! ([`read_caer_s`], [`read_emotic`]). This module reads datasets and keeps the
//! tallies; running the models is the caller's business, so the same tallies serve any way
//! of producing logits.

mod caer_s;
mod emotic;
mod matfile;
mod npy;

use std::path::{Path, PathBuf};

use crate::image::Rect;

pub use caer_s::{CAER_S_CLASSES, read_caer_s};
pub use emotic::{EMOTIC_CATEGORIES, read_emotic};
pub use npy::read_npy_picture;

/// A dataset problem, naming the file, the row and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {row}: {reason}")]
pub struct DatasetError {
    /// `index.csv` (or the picture) at fault.
    pub path: String,
    /// `row N`, or `-`.
    pub row: String,
    /// What is wrong.
    pub reason: String,
}

/// One labelled face.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The picture (or, with `in_array`, the `.npy` array that holds it).
    pub file: PathBuf,
    /// The picture is number N of the uint8 N×H×W×3 array in `file` (EMOTIC's
    /// preprocessed layout without its pictures), not a picture file.
    pub in_array: Option<usize>,
    /// Indices into the bundle's labels (one for single-label datasets).
    pub labels: Vec<usize>,
    /// The face box in pixels; `None` when the dataset gives none and the bundle's
    /// detector must find the face (CAER-S).
    pub face: Option<Rect>,
}

/// Reads `dir/index.csv`, resolving label names against the bundle's `labels`.
pub fn read_dataset(dir: &Path, labels: &[String]) -> Result<Vec<Item>, DatasetError> {
    let path = dir.join("index.csv");
    let err = |row: String, reason: String| DatasetError { path: path.display().to_string(), row, reason };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        err("-".into(), format!("cannot read the dataset index ({e}); a dataset folder needs index.csv"))
    })?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().map(|(_, l)| l.split(',').map(str::trim).collect()).unwrap_or_default();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            err("row 1".into(), format!("missing column '{name}': the header must have file,label,x,y,w,h"))
        })
    };
    let cols = [col("file")?, col("label")?, col("x")?, col("y")?, col("w")?, col("h")?];
    let mut items = Vec::new();
    for (i, line) in lines {
        let row = format!("row {}", i + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |c: usize| fields.get(c).copied().ok_or_else(|| err(row.clone(), "too few columns".into()));
        let mut item_labels = Vec::new();
        for name in get(cols[1])?.split(';').filter(|s| !s.is_empty()) {
            let idx = labels.iter().position(|l| l == name).ok_or_else(|| {
                err(row.clone(), format!("label '{name}' is not one of the bundle's labels ({})", labels.join(", ")))
            })?;
            item_labels.push(idx);
        }
        let mut nums = [0f32; 4];
        for (n, &c) in nums.iter_mut().zip(&cols[2..]) {
            let v = get(c)?;
            *n = v.parse().map_err(|_| err(row.clone(), format!("'{v}' is not a number")))?;
        }
        if !(nums[2] > 0.0 && nums[3] > 0.0) {
            return Err(err(row, "the box needs a positive width and height".into()));
        }
        items.push(Item {
            file: dir.join(get(cols[0])?),
            in_array: None,
            labels: item_labels,
            face: Some(Rect { x: nums[0], y: nums[1], w: nums[2], h: nums[3] }),
        });
    }
    if items.is_empty() {
        return Err(err("-".into(), "the dataset has no rows".into()));
    }
    Ok(items)
}

/// Index of the largest value, the first one on ties (as NumPy's `argmax`).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Single-label tallies for one kind of decision (vanilla, factual or TIE).
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// Number of labels.
    pub labels: usize,
    /// Items scored.
    pub n: u64,
    /// Items whose argmax was the truth.
    pub correct: u64,
    /// `confusion[truth * labels + decision]`.
    pub confusion: Vec<u64>,
}

impl Accuracy {
    /// Empty tallies over `labels` labels.
    pub fn new(labels: usize) -> Accuracy {
        Accuracy { labels, n: 0, correct: 0, confusion: vec![0; labels * labels] }
    }

    /// Counts one item: its truth and its logits (or scores; only the argmax matters).
    pub fn add(&mut self, truth: usize, logits: &[f32]) {
        let decision = argmax(logits);
        self.n += 1;
        self.correct += u64::from(decision == truth);
        if truth < self.labels && decision < self.labels {
            self.confusion[truth * self.labels + decision] += 1;
        }
    }

    /// Share correct, in percent.
    pub fn percent(&self) -> f64 {
        100.0 * self.correct as f64 / self.n.max(1) as f64
    }
}

/// Multi-label scores kept for mean average precision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeanAp {
    scores: Vec<Vec<f32>>,
    truth: Vec<Vec<bool>>,
}

impl MeanAp {
    /// Keeps one item's per-label scores and its true labels.
    pub fn add(&mut self, labels: &[usize], scores: &[f32]) {
        self.truth.push((0..scores.len()).map(|j| labels.contains(&j)).collect());
        self.scores.push(scores.to_vec());
    }

    /// Average precision per label (None for labels with no positive item).
    pub fn per_label(&self) -> Vec<Option<f64>> {
        let k = self.scores.first().map_or(0, Vec::len);
        (0..k)
            .map(|j| {
                let mut order: Vec<usize> = (0..self.scores.len()).collect();
                order.sort_by(|&a, &b| self.scores[b][j].total_cmp(&self.scores[a][j]));
                let (mut hits, mut sum) = (0u64, 0f64);
                for (rank, &i) in order.iter().enumerate() {
                    if self.truth[i][j] {
                        hits += 1;
                        sum += hits as f64 / (rank + 1) as f64;
                    }
                }
                (hits > 0).then(|| sum / hits as f64)
            })
            .collect()
    }

    /// Mean of the defined per-label APs, in percent.
    pub fn percent(&self) -> f64 {
        let aps: Vec<f64> = self.per_label().into_iter().flatten().collect();
        100.0 * aps.iter().sum::<f64>() / aps.len().max(1) as f64
    }
}

/// The expression shown at each frame of a rendered clip (the `.truth.csv` sidecar the
/// CLEF kit writes: `frame,label,...`), for scoring a daemon's events against it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClipTruth {
    by_frame: Vec<Option<String>>,
}

impl ClipTruth {
    /// Reads a sidecar; rows may come in any order, frames without a row have no truth.
    pub fn read(path: &Path) -> Result<ClipTruth, DatasetError> {
        let err = |row: String, reason: String| DatasetError { path: path.display().to_string(), row, reason };
        let text = std::fs::read_to_string(path).map_err(|e| err("-".into(), format!("cannot read ({e})")))?;
        let mut lines = text.lines().enumerate();
        let header: Vec<&str> = lines.next().map(|(_, l)| l.split(',').map(str::trim).collect()).unwrap_or_default();
        let (Some(fc), Some(lc)) =
            (header.iter().position(|h| *h == "frame"), header.iter().position(|h| *h == "label"))
        else {
            return Err(err("row 1".into(), "the header needs the columns frame and label".into()));
        };
        let mut by_frame: Vec<Option<String>> = Vec::new();
        for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let row = format!("row {}", i + 1);
            let frame: usize = fields
                .get(fc)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| err(row.clone(), "frame is not a whole number".into()))?;
            let label = fields.get(lc).ok_or_else(|| err(row, "no label".into()))?;
            if by_frame.len() <= frame {
                by_frame.resize(frame + 1, None);
            }
            by_frame[frame] = Some((*label).to_string());
        }
        Ok(ClipTruth { by_frame })
    }

    /// The expression shown at `frame`, if the sidecar has it.
    pub fn at(&self, frame: u64) -> Option<&str> {
        self.by_frame.get(usize::try_from(frame).ok()?).and_then(|l| l.as_deref())
    }
}

/// How often each decision carried by events was right, against a [`ClipTruth`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTally {
    /// Events that had a truth.
    pub events: u64,
    /// Right by the vanilla model alone (`factual` field of the event).
    pub vanilla: u64,
    /// Right by the factual φ(Y_c,Y_e) (`debiased` + `context_bias`).
    pub factual: u64,
    /// Right by the debiased TIE (`debiased`).
    pub debiased: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equal_values() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn accuracy_and_confusion_count_each_item_once() {
        let mut a = Accuracy::new(3);
        a.add(0, &[0.9, 0.1, 0.0]);
        a.add(1, &[0.9, 0.1, 0.0]);
        a.add(2, &[0.0, 0.1, 0.9]);
        assert_eq!((a.n, a.correct), (3, 2));
        assert_eq!(a.confusion, vec![1, 0, 0, 1, 0, 0, 0, 0, 1]);
        assert!((a.percent() - 66.666).abs() < 0.01);
    }

    #[test]
    fn average_precision_matches_a_hand_computed_ranking() {
        let mut m = MeanAp::default();
        // Label 0 ranked: item 2 (pos), item 0 (neg), item 1 (pos): AP = (1/1 + 2/3) / 2.
        m.add(&[], &[0.5, 0.0]);
        m.add(&[0], &[0.2, 0.0]);
        m.add(&[0, 1], &[0.9, 1.0]);
        let ap = m.per_label();
        assert!((ap[0].unwrap_or(0.0) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(ap[1], Some(1.0));
    }

    #[test]
    fn dataset_rows_name_their_problem() {
        let dir = std::env::temp_dir().join(format!("clefd-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let labels = vec!["happy".to_string(), "sad".to_string()];
        std::fs::write(dir.join("index.csv"), "file,label,x,y,w,h\na.png,happy,1,2,3,4\nb.png,bored,1,2,3,4\n")
            .unwrap();
        let e = read_dataset(&dir, &labels).unwrap_err().to_string();
        assert!(e.contains("row 3") && e.contains("'bored'"), "{e}");
        std::fs::write(dir.join("index.csv"), "file,label,x,y,w,h\na.png,sad,1,2,3,4\n").unwrap();
        let items = read_dataset(&dir, &labels).unwrap();
        assert_eq!(items[0].labels, vec![1]);
        assert_eq!(items[0].face, Some(Rect { x: 1.0, y: 2.0, w: 3.0, h: 4.0 }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
