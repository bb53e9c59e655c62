//! Small state files (`seq`, the spool's `acked`, `control.json`, `home-assistant.json`)
//! written so that a crash or power cut leaves either the old or the new content, never a
//! torn mix: write a temp file beside it, fsync it, rename it over, fsync the folder.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temp file [`write`] uses for `path` (`NAME.tmp`): readers of a state file may
/// look at it to recover an update that was cut before its rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`, durably and atomically.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Makes a rename or removal in `path`'s folder durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("acked");
        write(&p, b"1\n").unwrap();
        write(&p, b"2\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2\n");
        assert!(!temp_path(&p).exists());
        assert_eq!(temp_path(&p).file_name().unwrap(), "acked.tmp");
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("control.json");
        write(&p, b"{}").unwrap();
        // The temp file's name is taken by a folder: the write fails, the old file stays.
        std::fs::create_dir(temp_path(&p)).unwrap();
        assert!(write(&p, b"{\"x\":1}").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
    }
}
