//! Where snapshots go in the daemon (`[snapshots]`): a retained message per camera on
//! `{prefix}/{device}/{camera}/snapshot`, a bounded folder of files, or both; and the
//! reference each track's `new` event carries to them. Disk trouble is logged and counted,
//! never fatal: the event goes out without its file. The folder stays bounded without a
//! scan on the inference thread that writes a picture: it removes its own oldest picture
//! beyond the limit (one unlink), and the pictures of earlier runs are trimmed once, at
//! start, by a thread of its own.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// The pictures in the folder, oldest first (at most the folder's limit): this run's,
    /// and the earlier runs' that the trim at start kept, so that together they stay
    /// within the limit.
    written: Arc<Mutex<VecDeque<PathBuf>>>,
}

impl SnapshotPlaces {
    /// Places for snapshots; nothing pending yet.
    pub fn new(topics: Option<Topics>, dir: Option<(PathBuf, usize)>) -> SnapshotPlaces {
        let written: Arc<Mutex<VecDeque<PathBuf>>> = Arc::default();
        if let Some((dir, keep)) = dir.clone() {
            // Earlier runs' pictures: trimmed once, off every thread that matters; those
            // kept count towards the limit from then on (the oldest go first).
            let written = written.clone();
            let trim = move || match keep_newest(&dir, keep) {
                Ok(kept) => {
                    let mut written = written.lock().unwrap_or_else(|p| p.into_inner());
                    let older: Vec<PathBuf> = kept.into_iter().filter(|p| !written.contains(p)).collect();
                    for old in older.into_iter().rev() {
                        written.push_front(old);
                    }
                    while written.len() > keep.max(1) {
                        if let Some(old) = written.pop_front() {
                            let _ = std::fs::remove_file(old);
                        }
                    }
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot trim the snapshot folder"),
            };
            if let Err(e) = std::thread::Builder::new().name("snapshot-trim".into()).spawn(trim) {
                tracing::warn!(error = %e, "cannot start the thread that trims the snapshot folder");
            }
        }
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

/// Removes the oldest pictures beyond `keep` (never the newest one); the ones kept,
/// oldest first.
fn keep_newest(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut pictures: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    pictures.sort();
    let gone = pictures.len().saturating_sub(keep.max(1));
    for (_, old) in &pictures[..gone] {
        let _ = std::fs::remove_file(old);
    }
    Ok(pictures.into_iter().skip(gone).map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpgs(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "jpg")).count())
            .unwrap_or(0)
    }

    #[test]
    fn earlier_runs_pictures_count_towards_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..3 {
            std::fs::write(dir.path().join(format!("old-{n}.jpg")), b"jpeg").unwrap();
        }
        let places = SnapshotPlaces::new(None, Some((dir.path().to_path_buf(), 2)));
        // The trim runs on a thread of its own: wait (against a deadline) until it is done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while places.written.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the trim at start never finished");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for n in 0..3 {
            let shot =
                Snapshot { camera: "cam".into(), track_id: n, track_uid: format!("new-{n}"), jpeg: b"jpeg".to_vec() };
            places.place(&shot);
            assert_eq!(jpgs(dir.path()), 2, "the folder holds at most its limit, earlier runs' pictures included");
        }
        assert!(dir.path().join("new-2.jpg").exists() && dir.path().join("new-1.jpg").exists());
    }
}
