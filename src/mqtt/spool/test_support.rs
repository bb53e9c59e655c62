//! What the spool's tests share: its segment files, and the numbers it would send.

use std::path::{Path, PathBuf};

use super::Spool;

/// The segment files in `dir`, oldest first.
pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// The numbers of every event the spool would send now, in order.
pub(super) fn pending_seqs(s: &mut Spool) -> Vec<u64> {
    s.read_pending(0, 100_000).unwrap().iter().map(|r| r.seq).collect()
}
