//! The segment being appended to: its file, where it ends, and (in tests) faults injected
//! under it so that the spool's failure paths run against real files.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// Faults the next operations of a segment writer meet (tests only).
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(super) struct Faults {
    /// The next write puts only this many bytes down, then fails (disk full).
    pub short_write: Option<usize>,
    /// The next fsync fails.
    pub fail_sync: bool,
    /// The next truncation fails.
    pub fail_truncate: bool,
}

/// An open segment file positioned at its end.
#[derive(Debug)]
pub(super) struct SegWriter {
    file: File,
    #[cfg(test)]
    pub faults: std::sync::Arc<std::sync::Mutex<Faults>>,
}

#[cfg(test)]
fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected fault: {what}"))
}

impl SegWriter {
    pub(super) fn new(file: File) -> SegWriter {
        SegWriter {
            file,
            #[cfg(test)]
            faults: Default::default(),
        }
    }

    /// Appends `buf` at the file's position.
    pub(super) fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.faults.lock().ok().and_then(|mut f| f.short_write.take()) {
            self.file.write_all(&buf[..n.min(buf.len())])?;
            return Err(injected("short write"));
        }
        self.file.write_all(buf)
    }

    /// Cuts the file back to `len` bytes and puts the position there, so the next
    /// append starts at a record boundary (no hole of zeros).
    pub(super) fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self.faults.lock().is_ok_and(|mut f| std::mem::take(&mut f.fail_truncate)) {
            return Err(injected("truncate"));
        }
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        Ok(())
    }

    /// Makes what was written durable.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.faults.lock().is_ok_and(|mut f| std::mem::take(&mut f.fail_sync)) {
            return Err(injected("fsync"));
        }
        self.file.sync_data()
    }
}
