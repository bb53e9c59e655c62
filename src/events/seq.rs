//! The per-device event sequence number, kept across restarts so consumers can detect
//! loss: `seq` grows by exactly one per event, for the life of the device.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A counter persisted to one small file (written atomically: temp file + rename).
#[derive(Debug)]
pub struct SeqCounter {
    path: PathBuf,
    next: u64,
}

impl SeqCounter {
    /// Opens (or starts) the counter stored at `path`.
    pub fn open(path: &Path) -> std::io::Result<SeqCounter> {
        let next = match std::fs::read_to_string(path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold a number; delete it to restart the sequence at 0", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(SeqCounter { path: path.to_path_buf(), next })
    }

    /// The next number, persisted before it is handed out.
    pub fn allocate(&mut self) -> std::io::Result<u64> {
        let seq = self.next;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}", seq + 1)?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        self.next = seq + 1;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/seq");
        let mut c = SeqCounter::open(&p).unwrap();
        assert_eq!(c.allocate().unwrap(), 0);
        assert_eq!(c.allocate().unwrap(), 1);
        let mut c = SeqCounter::open(&p).unwrap();
        assert_eq!(c.allocate().unwrap(), 2);
        std::fs::write(&p, "garbage").unwrap();
        assert!(SeqCounter::open(&p).unwrap_err().to_string().contains("delete it"));
    }
}
