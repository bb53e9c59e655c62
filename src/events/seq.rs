//! The per-device event sequence number, kept across restarts so consumers can detect
//! loss: `seq` grows by one per event for the life of the device, and a number is never
//! handed out twice, not even after SIGKILL or a power cut.
//!
//! Numbers are reserved in memory ([`SeqCounter::reserve`]) and made durable in one step
//! per group of events ([`SeqCounter::persist`]: temp file, fsync, rename, fsync of the
//! folder) before any of them leaves the process. On open, the counter never starts below
//! what the spool has seen ([`SeqCounter::open`]'s `at_least`), so a counter file that fell
//! behind (restored from a backup, truncated by a power cut) cannot make numbers repeat.

use std::path::{Path, PathBuf};

use crate::mqtt::state_file;

/// The highest sequence number clefd hands out: 2^53, the largest integer every JSON
/// consumer reads exactly. At a million events a second it lasts 285 years, so a counter
/// at or above it was not reached by counting: it is damage, and continuing from it would
/// wrap or lose precision, so start-up refuses it.
pub const SEQ_LIMIT: u64 = 1 << 53;

/// Why the counter cannot open.
#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    /// The stored (or spooled) number is beyond what counting can reach.
    #[error(
        "{} holds {value}, beyond any sequence number clefd can have handed out (limit {SEQ_LIMIT}): the file          (or the spool's segment names) is damaged. Continuing would wrap or repeat numbers consumers have seen.          If consumers can be told the sequence restarts, stop clefd, delete {} and the spool folder's `acked`          file and segments whose names are that large, and start again",
        path.display(),
        path.display()
    )]
    Impossible {
        /// The file (or spool folder) holding it.
        path: PathBuf,
        /// The number.
        value: u64,
    },
    /// The file holds no number and nothing says where the sequence stood.
    #[error(
        "{} does not hold a number, and the spool does not say where the sequence stood: if no consumer relies          on seq yet, delete it to restart the sequence at 0",
        path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
    },
    /// Reading or creating it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

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
    ///
    /// A number at or beyond [`SEQ_LIMIT`] (in the file, its temp file, or from the spool)
    /// is [`SeqError::Impossible`]: never a counter that wraps.
    pub fn open(path: &Path, at_least: u64) -> Result<SeqCounter, SeqError> {
        let tmp = state_file::temp_path(path);
        let main = read_number(path);
        let unfinished = read_number(&tmp).ok().flatten();
        let stored = match main {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                if unfinished.is_none() && at_least == 0 {
                    return Err(SeqError::Damaged { path: path.to_path_buf() });
                }
                tracing::warn!(file = %path.display(), "the event sequence file is damaged; recovered from the spool");
                None
            }
            Err(source) => return Err(SeqError::Io { path: path.to_path_buf(), source }),
        };
        for (value, file) in [(stored, path.to_path_buf()), (unfinished, tmp.clone())] {
            if let Some(value) = value.filter(|v| *v >= SEQ_LIMIT) {
                return Err(SeqError::Impossible { path: file, value });
            }
        }
        if at_least >= SEQ_LIMIT {
            let spool = PathBuf::from("the event spool");
            return Err(SeqError::Impossible { path: spool, value: at_least });
        }
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
            std::fs::create_dir_all(dir).map_err(|source| SeqError::Io { path: dir.to_path_buf(), source })?;
        }
        let next = from_files.max(at_least);
        let persisted = if stored == Some(next) { next } else { u64::MAX };
        Ok(SeqCounter { path: path.to_path_buf(), next, persisted })
    }

    /// The next number, reserved in memory: call [`SeqCounter::persist`] before an event
    /// carrying it leaves the process.
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next;
        // Never wraps; [`SeqCounter::persist`] refuses numbers beyond the limit, so none
        // of them is ever sent.
        self.next = self.next.saturating_add(1);
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
        if self.next > SEQ_LIMIT {
            return Err(std::io::Error::other(format!("the event sequence reached its limit {SEQ_LIMIT}")));
        }
        state_file::write(&self.path, format!("{}\n", self.next).as_bytes())?;
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
    fn an_impossible_number_is_refused_naming_the_file_never_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq");
        std::fs::write(&p, "18446744073709551614\n").unwrap();
        let err = SeqCounter::open(&p, 0).unwrap_err();
        assert!(matches!(err, SeqError::Impossible { value: 18446744073709551614, .. }), "{err}");
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        std::fs::write(&p, "5\n").unwrap();
        let spool = SeqCounter::open(&p, u64::MAX - 1).unwrap_err();
        assert!(matches!(spool, SeqError::Impossible { .. }), "{spool}");
        // Just below the limit: the last numbers are handed out, then persisting refuses.
        std::fs::write(&p, format!("{}\n", SEQ_LIMIT - 1)).unwrap();
        let mut c = SeqCounter::open(&p, 0).unwrap();
        assert_eq!(c.reserve(), SEQ_LIMIT - 1);
        c.persist().unwrap();
        assert_eq!(c.reserve(), SEQ_LIMIT);
        assert!(c.persist().is_err(), "nothing beyond the limit is ever sent");
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
