//! EMOTIC as distributed, in either of the layouts its users have.
//!
//! - Original: `DIR/Annotations/Annotations.mat` (struct arrays `train`, `val`, `test`;
//!   each entry a picture with `filename`, `folder` and `person`, each person a
//!   `body_bbox` `[x1 y1 x2 y2]` and `combined_categories`, or `annotations_categories`
//!   in `train`), pictures under `DIR/emotic/<folder>/<filename>`.
//! - Preprocessed (`mat2py.py`): `DIR/emotic_pre/test.csv` (`Folder,Filename,Image
//!   Size,BBox,Categorical_Labels,...`) with the pictures under `DIR/emotic/`, or where
//!   they are absent the whole pictures in `test_context_arr.npy` beside the CSV.
//!
//! EMOTIC annotates bodies, and the daemon derives the body box from the face box, so
//! each person becomes the face box whose body box is the annotated one: the body crop
//! is then exactly the annotated box. Categories the bundle does not have are left out
//! of the scoring; a name that is not an EMOTIC category is an error.

use std::path::{Path, PathBuf};

use super::matfile::{self, Value};
use super::{DatasetError, Item};
use crate::image::Rect;

/// EMOTIC's 26 categories, in its order.
pub const EMOTIC_CATEGORIES: [&str; 26] = [
    "Affection",
    "Anger",
    "Annoyance",
    "Anticipation",
    "Aversion",
    "Confidence",
    "Disapproval",
    "Disconnection",
    "Disquietment",
    "Doubt/Confusion",
    "Embarrassment",
    "Engagement",
    "Esteem",
    "Excitement",
    "Fatigue",
    "Fear",
    "Happiness",
    "Pain",
    "Peace",
    "Pleasure",
    "Sadness",
    "Sensitivity",
    "Suffering",
    "Surprise",
    "Sympathy",
    "Yearning",
];

/// Reads the `test` split of an EMOTIC folder. `body` is the bundle's `[subject]`
/// `(body_width, body_height)`: how many face widths and heights a body box spans.
pub fn read_emotic(dir: &Path, labels: &[String], body: (f32, f32)) -> Result<Vec<Item>, DatasetError> {
    let ctx = Context { dir, labels, body };
    for mat in [dir.join("Annotations").join("Annotations.mat"), dir.join("Annotations.mat")] {
        if mat.exists() {
            return ctx.read_mat(&mat);
        }
    }
    for pre in [dir.join("emotic_pre"), dir.to_path_buf()] {
        if pre.join("test.csv").exists() {
            return ctx.read_csv(&pre);
        }
    }
    Err(DatasetError {
        path: dir.display().to_string(),
        row: "-".into(),
        reason: "not an EMOTIC folder: expected Annotations/Annotations.mat (original) or emotic_pre/test.csv \
                 (mat2py.py's preprocessed layout)"
            .into(),
    })
}

struct Context<'a> {
    dir: &'a Path,
    labels: &'a [String],
    body: (f32, f32),
}

impl Context<'_> {
    fn picture(&self, folder: &str, file: &str) -> PathBuf {
        let under = self.dir.join("emotic").join(folder).join(file);
        let beside = self.dir.join(folder).join(file);
        if !under.exists() && beside.exists() { beside } else { under }
    }

    /// The face box whose derived body box is `[x1, y1, x2, y2]`.
    fn face_for_body(&self, b: [f32; 4]) -> Rect {
        let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
        let (w, h) = (bw / self.body.0, bh / self.body.1);
        Rect { x: b[0] + bw / 2.0 - w / 2.0, y: b[1] + h / 2.0, w, h }
    }

    /// Bundle label indices of EMOTIC category names.
    fn labels_of(&self, names: &[String], err: impl Fn(String) -> DatasetError) -> Result<Vec<usize>, DatasetError> {
        let mut out = Vec::new();
        for name in names {
            if !EMOTIC_CATEGORIES.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                return Err(err(format!("'{name}' is not one of EMOTIC's 26 categories")));
            }
            if let Some(i) = self.labels.iter().position(|l| l.eq_ignore_ascii_case(name)) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        Ok(out)
    }

    fn read_mat(&self, path: &Path) -> Result<Vec<Item>, DatasetError> {
        let err = |row: String, reason: String| DatasetError { path: path.display().to_string(), row, reason };
        let bytes = std::fs::read(path).map_err(|e| err("-".into(), format!("cannot read ({e})")))?;
        let vars = matfile::read(&bytes).map_err(|e| err("-".into(), e))?;
        let Some((_, test)) = vars.into_iter().find(|(n, _)| n == "test") else {
            return Err(err("-".into(), "no 'test' struct array (EMOTIC's has train, val and test)".into()));
        };
        let mut items = Vec::new();
        for i in 0..test.len() {
            let row = format!("test({})", i + 1);
            let text = |f: &str| match test.field(i, f) {
                Some(Value::Char(s)) => Ok(s.clone()),
                _ => Err(err(row.clone(), format!("no '{f}' text field"))),
            };
            let file = self.picture(&text("folder")?, &text("filename")?);
            let people = test.field(i, "person").ok_or_else(|| err(row.clone(), "no 'person' field".into()))?;
            for j in 0..people.len() {
                let who = format!("{row}.person({})", j + 1);
                let b = match people.field(j, "body_bbox") {
                    Some(Value::Num(v)) if v.len() == 4 => [v[0] as f32, v[1] as f32, v[2] as f32, v[3] as f32],
                    _ => return Err(err(who, "body_bbox must be [x1 y1 x2 y2]".into())),
                };
                let names = match people.field(j, "combined_categories") {
                    Some(v) => v.strings(),
                    None => match people.field(j, "annotations_categories") {
                        Some(a) => {
                            (0..a.len()).filter_map(|k| a.field(k, "categories")).flat_map(Value::strings).collect()
                        }
                        None => return Err(err(who, "no combined_categories or annotations_categories".into())),
                    },
                };
                let labels = self.labels_of(&names, |m| err(who.clone(), m))?;
                items.push(Item { file: file.clone(), in_array: None, labels, face: Some(self.face_for_body(b)) });
            }
        }
        if items.is_empty() {
            return Err(err("-".into(), "the test split has no annotated person".into()));
        }
        Ok(items)
    }

    fn read_csv(&self, pre: &Path) -> Result<Vec<Item>, DatasetError> {
        let path = pre.join("test.csv");
        let err = |row: String, reason: String| DatasetError { path: path.display().to_string(), row, reason };
        let text = std::fs::read_to_string(&path).map_err(|e| err("-".into(), format!("cannot read ({e})")))?;
        let mut rows = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let header = rows.next().map(|(_, l)| split_csv(l)).unwrap_or_default();
        let col = |name: &str| {
            header.iter().position(|h| h == name).ok_or_else(|| {
                err("row 1".into(), format!("missing column '{name}' (mat2py.py writes Index,Folder,Filename,Image Size,BBox,Categorical_Labels,...)"))
            })
        };
        let [folder, file, size, bbox, cats] =
            [col("Folder")?, col("Filename")?, col("Image Size")?, col("BBox")?, col("Categorical_Labels")?];
        let arrays = pre.join("test_context_arr.npy");
        let mut items = Vec::new();
        for (n, (i, line)) in rows.enumerate() {
            let row = format!("row {}", i + 1);
            let f = split_csv(line);
            let get = |c: usize| f.get(c).map(String::as_str).ok_or_else(|| err(row.clone(), "too few columns".into()));
            let numbers = |c: usize| -> Result<Vec<f32>, DatasetError> {
                list_items(get(c)?)
                    .iter()
                    .map(|v| v.parse::<f32>().map_err(|_| err(row.clone(), format!("'{v}' is not a number"))))
                    .collect()
            };
            let (b, wh) = (numbers(bbox)?, numbers(size)?);
            let (&[x1, y1, x2, y2], &[w, h]) = (&b[..], &wh[..]) else {
                return Err(err(row, "BBox must be [x1, y1, x2, y2] and Image Size [width, height]".into()));
            };
            let labels = self.labels_of(&list_items(get(cats)?), |m| err(row.clone(), m))?;
            let picture = self.picture(get(folder)?, get(file)?);
            let item = if picture.exists() {
                Item { file: picture, in_array: None, labels, face: Some(self.face_for_body([x1, y1, x2, y2])) }
            } else if arrays.exists() {
                // The whole pictures resized to 224×224 (mat2py.py): the box scales with them.
                let (sx, sy) = (224.0 / w.max(1.0), 224.0 / h.max(1.0));
                let face = self.face_for_body([x1 * sx, y1 * sy, x2 * sx, y2 * sy]);
                Item { file: arrays.clone(), in_array: Some(n), labels, face: Some(face) }
            } else {
                let reason = format!("neither the picture {} nor {} exists", picture.display(), arrays.display());
                return Err(err(row, reason));
            };
            items.push(item);
        }
        if items.is_empty() {
            return Err(err("-".into(), "no rows".into()));
        }
        Ok(items)
    }
}

/// Fields of one CSV line, with `"..."` quoting (the lists in mat2py.py's columns).
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The items of a Python list literal: `['Anger', 'Fatigue']` or `[1, 2]`.
fn list_items(text: &str) -> Vec<String> {
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches(['\'', '"']).to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_keep_quoted_lists_whole() {
        let f = split_csv(r#"0,a/b,x.jpg,"[640, 480]","[1, 2, 3, 4]","['Anger', 'Fatigue']",Male"#);
        assert_eq!(f.len(), 7);
        assert_eq!(list_items(&f[5]), vec!["Anger".to_string(), "Fatigue".to_string()]);
        assert_eq!(list_items(&f[4]), vec!["1", "2", "3", "4"]);
        assert!(list_items("[]").is_empty());
    }

    #[test]
    fn the_face_box_derives_the_annotated_body_box() {
        let labels = vec!["Anger".to_string()];
        let ctx = Context { dir: Path::new("."), labels: &labels, body: (3.0, 7.0) };
        let f = ctx.face_for_body([30.0, 10.0, 90.0, 150.0]);
        // The daemon's body box: x + w/2 − 1.5w, y − h/2, 3w, 7h.
        let body = [f.x + f.w / 2.0 - 1.5 * f.w, f.y - f.h / 2.0, 3.0 * f.w, 7.0 * f.h];
        for (a, b) in body.iter().zip([30.0, 10.0, 60.0, 140.0]) {
            assert!((a - b).abs() < 1e-4, "{body:?}");
        }
    }
}
