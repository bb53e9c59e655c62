//! CAER-S as distributed: `train/` and `test/`, one folder per class, no face boxes.

use std::path::{Path, PathBuf};

use super::{DatasetError, Item};

/// CAER-S's seven classes, as its folders name them.
pub const CAER_S_CLASSES: [&str; 7] = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"];

/// Reads a CAER-S folder as it is distributed: `train/` and `test/`, each with one folder
/// per class (`Angry` … `Surprise`) of pictures (`.png`, `.jpg`). The `test/` split is
/// scored (or `dir` itself when it holds the class folders). CAER-S gives no face boxes:
/// the items have none, and the bundle's detector finds the faces.
pub fn read_caer_s(dir: &Path, labels: &[String]) -> Result<Vec<Item>, DatasetError> {
    let root = if dir.join("test").is_dir() { dir.join("test") } else { dir.to_path_buf() };
    let err = |path: &Path, reason: String| DatasetError { path: path.display().to_string(), row: "-".into(), reason };
    let entries = std::fs::read_dir(&root).map_err(|e| err(&root, format!("cannot read the CAER-S folder ({e})")))?;
    let mut classes: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    classes.sort();
    if classes.is_empty() {
        let expected = CAER_S_CLASSES.join(", ");
        return Err(err(&root, format!("no class folders: CAER-S has train/ and test/, each with {expected}")));
    }
    let mut items = Vec::new();
    for class in classes {
        let name = class.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let idx = labels.iter().position(|l| l.eq_ignore_ascii_case(&name)).ok_or_else(|| {
            err(&class, format!("class '{name}' is not one of the bundle's labels ({})", labels.join(", ")))
        })?;
        let pictures = std::fs::read_dir(&class).map_err(|e| err(&class, format!("cannot read ({e})")))?;
        let mut files: Vec<PathBuf> = pictures
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| matches!(x.to_ascii_lowercase().to_str(), Some("png" | "jpg" | "jpeg")))
            })
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|file| Item { file, in_array: None, labels: vec![idx], face: None }));
    }
    if items.is_empty() {
        return Err(err(&root, "the class folders hold no .png or .jpg pictures".into()));
    }
    Ok(items)
}
