//! The per-device event sequence number, kept across restarts so consumers can detect
//! loss: `seq` grows by one per event for the life of the device, and a number is never
//! handed out twice, not even after SIGKILL or a power cut.
//!
//! Numbers are reserved in memory ([`SeqCounter::reserve`]) and made durable in one step
//! per group of events ([`SeqCounter::persist`]: temp file, fsync, rename, fsync of the
//! folder) before any of them leaves the process. On open, the counter never starts below
//! what the spool has seen ([`SeqCounter::open`]'s `at_least`), so a counter file that fell
//! behind (restored from a backup, truncated by a power cut) cannot make numbers repeat.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A counter persisted to one small file.
#[derive(Debug)]
pub struct SeqCounter {
    path: PathBuf,
    next: u64,
    persisted: u64,
}

/// Reads a counter file: `Ok(None)` when it is missing, `Err` when it holds no number.
fn read_number(path: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} does not hold a number", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl SeqCounter {
    /// Opens (or starts) the counter stored at `path`, never below `at_least` (the next
    /// number after everything the spool holds or has had acknowledged).
    ///
    /// A file that holds no number (torn by a power cut) is recovered from the temp file
    /// of an unfinished update or from `at_least`; only when neither knows anything is it
    /// an error, since starting again at 0 would repeat numbers consumers have seen.
    pub fn open(path: &Path, at_least: u64) -> std::io::Result<SeqCounter> {
        let tmp = path.with_extension("tmp");
        let main = read_number(path);
        let unfinished = read_number(&tmp).ok().flatten();
        let stored = match main {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                if unfinished.is_none() && at_least == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{e}, and the spool does not say where the sequence stood: if no consumer relies on \
                             seq yet, delete it to restart the sequence at 0"
                        ),
                    ));
                }
                tracing::warn!(file = %path.display(), "the event sequence file is damaged; recovered from the spool");
                None
            }
            Err(e) => return Err(e),
        };
        let from_files = stored.into_iter().chain(unfinished).max().unwrap_or(0);
        if at_least > from_files {
            tracing::warn!(
                file = %path.display(),
                stored = from_files,
                spool = at_least,
                "the event sequence file is behind the spool (restored or moved state_dir?): continuing after the spool"
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let next = from_files.max(at_least);
        let persisted = if stored == Some(next) { next } else { u64::MAX };
        Ok(SeqCounter { path: path.to_path_buf(), next, persisted })
    }

    /// The next number, reserved in memory: call [`SeqCounter::persist`] before an event
    /// carrying it leaves the process.
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// The number the next [`SeqCounter::reserve`] returns.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Makes every reserved number durable. After an error nothing reserved may be sent;
    /// the numbers stay used (a gap consumers can see), never handed out again.
    pub fn persist(&mut self) -> std::io::Result<()> {
        if self.persisted == self.next {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{}", self.next)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.persisted = self.next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SeqCounter {
        /// Reserves and persists one number.
        fn allocate(&mut self) -> std::io::Result<u64> {
            let seq = self.reserve();
            self.persist()?;
            Ok(seq)
        }
    }

    #[test]
    fn continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/seq");
        let mut c = SeqCounter::open(&p, 0).unwrap();
        assert_eq!(c.allocate().unwrap(), 0);
        assert_eq!(c.allocate().unwrap(), 1);
        let mut c = SeqCounter::open(&p, 0).unwrap();
        assert_eq!(c.allocate().unwrap(), 2);
        std::fs::write(&p, "garbage").unwrap();
        assert!(SeqCounter::open(&p, 0).unwrap_err().to_string().contains("delete it"));
    }

    #[test]
    fn reserved_numbers_are_never_reused_even_when_persisting_failed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq");
        let mut c = SeqCounter::open(&p, 0).unwrap();
        assert_eq!(c.reserve(), 0);
        c.persist().unwrap();
        // The folder goes away: persisting fails, and the reserved number stays used.
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(c.reserve(), 1);
        assert!(c.persist().is_err());
        std::fs::create_dir_all(dir.path()).unwrap();
        assert_eq!(c.reserve(), 2);
        c.persist().unwrap();
        assert_eq!(SeqCounter::open(&p, 0).unwrap().peek(), 3);
    }

    #[test]
    fn killed_between_write_and_rename_continues_after_the_unfinished_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq");
        let mut c = SeqCounter::open(&p, 0).unwrap();
        for _ in 0..5 {
            c.allocate().unwrap();
        }
        // A later update wrote and fsync'd seq.tmp (7) and died before the rename.
        std::fs::write(p.with_extension("tmp"), "7\n").unwrap();
        assert_eq!(SeqCounter::open(&p, 0).unwrap().peek(), 7);
    }

    #[test]
    fn a_truncated_or_stale_file_never_goes_below_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq");
        std::fs::write(&p, "").unwrap();
        assert_eq!(SeqCounter::open(&p, 42).unwrap().peek(), 42, "empty file: the spool's number");
        std::fs::write(&p, "10\n").unwrap();
        assert_eq!(SeqCounter::open(&p, 42).unwrap().peek(), 42, "stale file: the spool's number");
        std::fs::write(&p, "50\n").unwrap();
        assert_eq!(SeqCounter::open(&p, 42).unwrap().peek(), 50, "the file ahead: the file's number");
    }
}
