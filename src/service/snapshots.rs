//! Where snapshots go in the daemon (`[snapshots]`): a retained message per camera on
//! `{prefix}/{device}/{camera}/snapshot`, a bounded folder of files, or both; and the
//! reference each track's `new` event carries to them. Disk trouble is logged and counted,
//! never fatal: the event goes out without its file. The folder stays bounded without a
//! scan on the inference thread that writes a picture: it removes its own oldest picture
//! beyond the limit (one unlink), and the pictures of earlier runs are trimmed once, at
//! start, by a thread of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::SnapshotRef;
use crate::mqtt::Topics;
use crate::pipeline::snapshot::Snapshot;

/// The destinations, and the references waiting for their `new` events.
#[derive(Debug)]
pub struct SnapshotPlaces {
    /// Publish retained on the camera's snapshot topic.
    pub topics: Option<Topics>,
    /// Write into this folder, keeping the newest `max_files`.
    pub dir: Option<(PathBuf, usize)>,
    pending: Mutex<HashMap<(String, u64), SnapshotRef>>,
    /// Snapshots that could not be written.
    pub failed: AtomicU64,
    /// The pictures this run wrote, oldest first (at most the folder's limit).
    written: Mutex<std::collections::VecDeque<PathBuf>>,
}

impl SnapshotPlaces {
    /// Places for snapshots; nothing pending yet.
    pub fn new(topics: Option<Topics>, dir: Option<(PathBuf, usize)>) -> SnapshotPlaces {
        if let Some((dir, keep)) = dir.clone() {
            // Earlier runs' pictures: trimmed once, off every thread that matters.
            let trim = move || {
                if let Err(e) = keep_newest(&dir, keep) {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot trim the snapshot folder");
                }
            };
            if let Err(e) = std::thread::Builder::new().name("snapshot-trim".into()).spawn(trim) {
                tracing::warn!(error = %e, "cannot start the thread that trims the snapshot folder");
            }
        }
        let written = Mutex::default();
        SnapshotPlaces { topics, dir, pending: Mutex::default(), failed: AtomicU64::new(0), written }
    }

    /// Writes the file (when a folder is set) and notes where the snapshot went for its
    /// event; whether it should also go to the publisher (retained on its topic).
    pub fn place(&self, shot: &Snapshot) -> bool {
        let file = self.dir.as_ref().and_then(|(dir, keep)| match write(dir, shot) {
            Ok(path) => {
                let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
                written.push_back(path.clone());
                while written.len() > (*keep).max(1) {
                    if let Some(old) = written.pop_front() {
                        let _ = std::fs::remove_file(old);
                    }
                }
                Some(path.display().to_string())
            }
            Err(e) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot write snapshots (is the folder writable, the disk full?); events go out without them");
                }
                None
            }
        });
        let topic = self.topics.as_ref().map(|t| t.snapshot(&shot.camera));
        let to_mqtt = topic.is_some();
        if let Ok(mut pending) = self.pending.lock() {
            // One per live track at most: a track's `new` event follows its snapshot.
            if pending.len() > 1024 {
                pending.clear();
            }
            pending.insert((shot.camera.clone(), shot.track_id), SnapshotRef { topic, file });
        }
        to_mqtt
    }

    /// The reference for the `new` event of `camera`'s track `track_id`, if it has one.
    pub fn take(&self, camera: &str, track_id: u64) -> Option<SnapshotRef> {
        self.pending.lock().ok()?.remove(&(camera.to_string(), track_id))
    }
}

/// Writes `shot` as `{track_uid}.jpg` (aside, then renamed).
fn write(dir: &Path, shot: &Snapshot) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.jpg", shot.track_uid));
    let tmp = dir.join(format!(".{}.jpg.tmp", shot.track_uid));
    std::fs::write(&tmp, &shot.jpeg)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes the oldest pictures beyond `keep` (never the newest one).
fn keep_newest(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut pictures: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if pictures.len() > keep {
        pictures.sort();
        for (_, old) in &pictures[..pictures.len() - keep.max(1)] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}
