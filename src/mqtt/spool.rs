//! The on-disk spool: every event is written here (and fsync'd) before it is sent, and
//! forgotten only once the broker has acknowledged it. While the broker is away the spool
//! grows, up to `spool_max_mb`; then whole segments are dropped, oldest first, and every
//! event lost that way is counted. Events already sent whose acknowledgement never came
//! (the broker may have them) are never dropped: they are kept and sent again, so the drop
//! count is exactly the number of events a consumer will never see. After a crash or power
//! cut the spool is read back and whatever was not acknowledged is sent again, in `seq`
//! order.
//!
//! Layout: `DIR/<first-seq, 20 digits>.seg` (format in [`format`]), plus `DIR/acked`,
//! the commit file: the lowest sequence number not yet acknowledged and one past the
//! highest made durable. The commit protocol, as in a database's write-ahead log:
//! - a record is sent only once fsync'd; the commit file is written (aside, fsync'd,
//!   renamed) only after the data it vouches for is fsync'd;
//! - a failed or short write, or a failed fsync, is rolled back to the last good record
//!   boundary (truncate and seek), so the next append never leaves a hole, and the events
//!   rolled back are reported ([`SyncError::lost`]);
//! - a segment is deleted only after the commit file says nothing in it is needed, and a
//!   segment rewritten to keep events in doubt is written (aside, fsync'd) before the old
//!   one goes;
//! - reading back, damage is never the end: the reader finds the next record that checks
//!   out, and every number in between (or up to the next segment, or up to the durable
//!   watermark for the newest segment, or a segment that disappeared) is counted as
//!   corrupt and lost ([`Spool::corrupt`], [`Spool::lost`]), never silently skipped.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

mod format;
mod unspooled;
mod writer;

use format::{Gap, HEADER_LEN, Window, encode, header, record_len};
use writer::SegWriter;

use super::state_file;

/// One spooled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// MQTT topic.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// A failed [`Spool::sync`]: `lost` events were rolled back (they will never be sent).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SyncError {
    /// Events appended since the last sync that are not in the spool any more.
    pub lost: u64,
    /// Their numbers: every other event appended stays in the spool and is sent, so the
    /// history can keep those.
    pub rolled_back: Vec<std::ops::Range<u64>>,
    /// What the disk said.
    pub source: std::io::Error,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// The last record in the file.
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Bytes fsync'd: a failure rolls back to here.
    durable_bytes: u64,
    /// The last record fsync'd (None: none yet): nothing after it is sent.
    durable_last: Option<u64>,
    /// Records appended since the last fsync.
    undurable: u64,
    /// Open for writing: this process created it.
    writer: Option<SegWriter>,
    /// Appends may go on in it.
    open: bool,
}

/// The spool in one folder.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// Every seq below this is acknowledged (or dropped, or lost).
    low_water: u64,
    /// Acknowledged (or dropped, or lost) sequence numbers above `low_water`.
    acked_above: BTreeSet<u64>,
    /// Events dropped because the spool was full.
    dropped: u64,
    /// Records found damaged.
    corrupt: u64,
    /// Events not acknowledged that damage took.
    lost: u64,
    /// One past the highest number made durable (persisted in the commit file).
    durable_next: u64,
    /// One past the highest number dropped for room (persisted): a segment missing below
    /// it was dropped and counted then, not lost.
    dropped_next: u64,
    /// The last number appended, for the next segment's header.
    last_written: Option<u64>,
    /// Numbers already counted lost, each kept in a `FROM-TO.lost` file until acknowledged
    /// numbers pass it, so damage still on disk is counted once, not at every start.
    tombstones: Vec<(u64, PathBuf)>,
    /// Numbers after the last spooled event whose events the disk refused (counted lost
    /// by the caller), `[from, to)`, until a `.lost` file notes them
    /// ([`Spool::count_unspooled`] would count them again at the next start).
    unnoted: Option<(u64, u64)>,
    /// Sent and not acknowledged (at most a send window): kept when their segment goes.
    in_doubt: BTreeSet<u64>,
    commit_dirty: bool,
    /// A segment was created since the folder was last fsync'd.
    dir_dirty: bool,
    /// Where the last read stopped: (segment's first seq, byte offset, next seq), so
    /// sending the live tail or a long backlog never re-reads a segment.
    cursor: Option<(u64, u64, u64)>,
    #[cfg(test)]
    faults: std::sync::Arc<std::sync::Mutex<writer::Faults>>,
    /// Tests simulate a crash: no sync on drop.
    #[cfg(test)]
    crashed: bool,
}

fn seg_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The commit file: `LOW [DURABLE [DROPPED]]` (older spools wrote `LOW` alone).
fn read_commit(dir: &Path) -> [u64; 3] {
    let text = std::fs::read_to_string(dir.join("acked")).unwrap_or_default();
    let mut it = text.split_whitespace().map(|t| t.parse::<u64>().ok());
    [(); 3].map(|()| it.next().flatten().unwrap_or(0))
}

/// One segment as read at open.
struct Found {
    seg: Segment,
    prev: Option<u64>,
    tail_damage: Option<u64>,
    empty: bool,
}

impl Spool {
    /// Opens (or creates) the spool, bounded to `max_bytes` on disk.
    ///
    /// A folder that does not exist and cannot be made (a read-only or full state
    /// folder) is no error: the spool opens empty, every append fails (the caller counts
    /// those events as lost) until the folder can be made, and then works. A folder that
    /// exists and cannot be read is an error: what it holds is unknown.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        match std::fs::create_dir_all(dir) {
            Ok(()) => {
                names = std::fs::read_dir(dir)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                    .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
                    .collect();
            }
            Err(e) if !dir.exists() => {
                tracing::error!(spool = %dir.display(), error = %e, "cannot create the event spool: events are lost until it can be");
            }
            Err(e) => return Err(e),
        }
        let [low_water, durable, dropped_next] = read_commit(dir);
        names.sort();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(64 * 1024),
            segment_bytes: (max_bytes / 8).clamp(16 * 1024, 8 * 1024 * 1024),
            segments: Vec::new(),
            low_water,
            acked_above: BTreeSet::new(),
            dropped: 0,
            corrupt: 0,
            lost: 0,
            durable_next: durable,
            dropped_next,
            last_written: None,
            tombstones: Vec::new(),
            unnoted: None,
            in_doubt: BTreeSet::new(),
            commit_dirty: false,
            dir_dirty: false,
            cursor: None,
            #[cfg(test)]
            faults: Default::default(),
            #[cfg(test)]
            crashed: false,
        };
        if dir.is_dir() {
            spool.load_tombstones()?;
        }
        let mut found = Vec::new();
        let all = Window { offset: 0, prev_seq: None, from: 0, until: u64::MAX, limit: usize::MAX };
        for (first_seq, path) in names {
            let read = format::read(&path, first_seq, all)?;
            if read.legacy_corrupt > 0 {
                tracing::warn!(file = %path.display(), records = read.legacy_corrupt, "skipped spooled events whose checksum does not match");
                // Legacy records cannot say which numbers they held, so they are counted
                // one by one, unless the commit file has a durable watermark: then every
                // number missing below it is counted by number (below), and counting the
                // unreadable bytes as well would count one loss twice.
                if durable == 0 {
                    spool.corrupt += read.legacy_corrupt;
                    spool.lost += read.legacy_corrupt;
                }
            }
            for gap in &read.gaps {
                spool.damage(&path, *gap);
            }
            // Numbers missing between two good records with no damage between them
            // were dropped or acknowledged before the segment was rewritten.
            for pair in read.records.windows(2) {
                spool.acked_above.extend((pair[0].seq + 1..pair[1].seq).filter(|s| *s >= low_water));
            }
            let (first, last) = match (read.records.first(), read.records.last()) {
                (Some(a), Some(b)) => (a.seq, b.seq),
                _ => (first_seq, first_seq.saturating_sub(1)),
            };
            let empty = read.records.is_empty();
            let seg = Segment {
                first_seq: first,
                last_seq: last,
                path,
                bytes: read.end,
                durable_bytes: read.end,
                durable_last: (!empty).then_some(last),
                undurable: 0,
                writer: None,
                open: false,
            };
            // A damaged header cannot say what came before: assume the segment followed
            // on from the one before it, so a missing one is counted, not ignored.
            let prev = match (read.current, read.header_ok) {
                (true, true) => read.prev,
                (true, false) => first_seq.checked_sub(1),
                (false, _) => None,
            };
            found.push(Found { seg, prev, tail_damage: read.tail_damage, empty });
        }
        spool.settle(found);
        spool.adopt();
        spool.advance_to(spool.low_water);
        if let Err(e) = spool.compact() {
            tracing::warn!(spool = %dir.display(), error = %e, "cannot tidy the spool");
        }
        Ok(spool)
    }

    /// Counts what damage and missing segments took, then keeps the segments that hold
    /// something.
    fn settle(&mut self, found: Vec<Found>) {
        let mut last_good: Option<u64> = self.low_water.checked_sub(1);
        for i in 0..found.len() {
            let f = &found[i];
            // The next number that must exist after this segment's tail.
            let expected_end = found.get(i + 1).map_or(self.durable_next, |n| n.seg.first_seq);
            if let Some(p) = f.prev.filter(|_| i == 0 || found[i - 1].tail_damage.is_none()) {
                let from = last_good.map_or(0, |l| l + 1).max(self.dropped_next);
                let to = (p + 1).min(self.durable_next);
                if to > from {
                    let path = self.dir.join(seg_name(from));
                    self.damage(&path, Gap { from, to });
                }
            }
            // Only what the commit file says was made durable can have been lost: a
            // crash takes what was not, and that was never sent.
            if let Some(t) = f.tail_damage {
                let to = expected_end.min(self.durable_next);
                if to > t {
                    self.damage(&f.seg.path, Gap { from: t, to });
                }
                // Counted, or a torn write (never durable): cut it, so that it is never
                // judged again against a durable watermark that has moved past it.
                {
                    let cut = OpenOptions::new().write(true).open(&f.seg.path).and_then(|file| {
                        file.set_len(f.seg.bytes)?;
                        file.sync_all()
                    });
                    if let Err(e) = cut {
                        tracing::warn!(file = %f.seg.path.display(), error = %e, "cannot cut a torn write from the spool");
                    }
                }
            }
            if !f.empty {
                last_good = Some(last_good.map_or(f.seg.last_seq, |l| l.max(f.seg.last_seq)));
            }
        }
        // The newest durable events must be there: a cut at a record boundary or a
        // deleted newest segment shows here.
        // (Numbers already counted above are not counted again.)
        let from = last_good.map_or(0, |l| l + 1).max(self.dropped_next);
        if self.durable_next > from {
            let path = found.last().map_or_else(|| self.dir.join("acked"), |f| f.seg.path.clone());
            self.damage(&path, Gap { from, to: self.durable_next });
        }
        for f in found {
            if f.empty {
                let _ = std::fs::remove_file(&f.seg.path);
            } else {
                self.last_written = Some(self.last_written.map_or(f.seg.last_seq, |l| l.max(f.seg.last_seq)));
                self.segments.push(f.seg);
            }
        }
    }

    /// Reads the `.lost` files: their numbers were counted by an earlier run.
    fn load_tombstones(&mut self) -> std::io::Result<()> {
        /// More than a spool can hold: a damaged file, ignored.
        const MOST: u64 = 50_000_000;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            // A note cut by a crash before its rename: its numbers were noted again or
            // counted by the next start; the file would otherwise stay for ever.
            if path.to_str().is_some_and(|p| p.ends_with(".lost.tmp")) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::debug!(file = %path.display(), error = %e, "cannot remove a cut note");
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "lost") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut it = text.split_whitespace().map(|t| t.parse::<u64>().ok());
            let (Some(Some(from)), Some(Some(to))) = (it.next(), it.next()) else { continue };
            if to < from || to - from > MOST {
                continue;
            }
            self.acked_above.extend(from.max(self.low_water)..to);
            self.tombstones.push((to, path));
        }
        Ok(())
    }

    /// Records a crash left beyond the durable watermark are read back and will be sent:
    /// make them durable and say so, so that damage to them later is counted.
    fn adopt(&mut self) {
        let durable = self.durable_next;
        let beyond: Vec<(PathBuf, u64)> =
            self.segments.iter().filter(|s| s.last_seq >= durable).map(|s| (s.path.clone(), s.last_seq)).collect();
        for (path, last) in beyond {
            match OpenOptions::new().write(true).open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => {
                    self.durable_next = self.durable_next.max(last + 1);
                    self.commit_dirty = true;
                }
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot fsync the spool"),
            }
        }
        if self.commit_dirty {
            if let Err(e) = self.write_commit() {
                tracing::warn!(spool = %self.dir.display(), error = %e, "cannot write the spool's commit file");
            }
        }
    }

    /// Counts the numbers of `gap` (not acknowledged) as damaged and lost, once.
    fn damage(&mut self, path: &Path, gap: Gap) {
        let from = gap.from.max(self.low_water);
        let mut n = 0;
        for s in from..gap.to {
            if self.acked_above.insert(s) {
                n += 1;
            }
        }
        if n > 0 {
            tracing::warn!(file = %path.display(), from = gap.from, to = gap.to - 1, events = n, "spooled events are damaged or missing: counted as lost");
            self.corrupt += n;
            self.lost += n;
            self.commit_dirty = true;
            let stone = self.dir.join(format!("{from:020}-{:020}.lost", gap.to));
            match state_file::write(&stone, format!("{from} {}\n", gap.to).as_bytes()) {
                Ok(()) => self.tombstones.push((gap.to, stone)),
                Err(e) => {
                    tracing::warn!(file = %stone.display(), error = %e, "cannot note lost events: a restart counts them again")
                }
            }
        }
    }

    /// Events not yet acknowledged (or dropped).
    pub fn pending(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.last_seq >= self.low_water)
            .map(|s| {
                let from = s.first_seq.max(self.low_water);
                let done = self.acked_above.range(from..=s.last_seq).count() as u64;
                (s.last_seq - from + 1).saturating_sub(done)
            })
            .sum()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Events dropped because the spool was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The spool's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records found damaged (or missing) since the spool was opened.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Events not acknowledged that damage took since the spool was opened: they will
    /// never be sent.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The lowest sequence number the spool has not seen: after everything it holds and
    /// everything acknowledged. The sequence counter never starts below it.
    pub fn next_seq(&self) -> u64 {
        let held = self.segments.iter().map(|s| s.last_seq + 1).max().unwrap_or(0);
        held.max(self.low_water).max(self.durable_next)
    }

    /// Appends one record (not yet durable, and not sent: call [`Spool::sync`]). Drops
    /// the oldest segments when the bound would be exceeded; returns how many events that
    /// dropped. On an error (disk full, read-only folder) the record is not in the spool,
    /// the file is cut back to the last whole record, and the next append may succeed.
    pub fn append(&mut self, rec: &Record) -> std::io::Result<u64> {
        let appended = self.append_record(rec);
        if appended.is_err() {
            self.unspooled(rec.seq..rec.seq + 1);
        }
        appended
    }

    fn append_record(&mut self, rec: &Record) -> std::io::Result<u64> {
        let len = record_len(rec);
        let mut dropped = 0;
        while self.bytes() + len > self.max_bytes && self.segments.len() > 1 {
            match self.drop_oldest()? {
                Some(n) => dropped += n,
                None => break,
            }
        }
        let buf = encode(rec);
        let segment_bytes = self.segment_bytes;
        let current = self
            .segments
            .last_mut()
            .filter(|s| s.open && s.bytes + len <= segment_bytes && s.writer.is_some() && rec.seq > s.last_seq);
        match current {
            Some(seg) => {
                let Some(w) = seg.writer.as_mut() else { return Err(std::io::Error::other("no writer")) };
                if let Err(e) = w.write_all(&buf) {
                    // The number stays unused: a hole in the segment, not an event.
                    self.acked_above.insert(rec.seq);
                    // Cut what was half written; if even that fails, append elsewhere.
                    if let Err(cut) = w.truncate(seg.bytes) {
                        tracing::warn!(file = %seg.path.display(), error = %cut, "cannot cut a half-written record; the next event starts a new segment");
                        seg.open = false;
                    }
                    return Err(e);
                }
                seg.last_seq = rec.seq;
                seg.bytes += len;
                seg.undurable += 1;
            }
            None => {
                if let Some(seg) = self.segments.last_mut() {
                    seg.open = false;
                }
                let path = self.dir.join(seg_name(rec.seq));
                // The folder may not have existed at open (a read-only state folder since
                // made writable): make it, durably, before anything goes in it.
                if !self.dir.is_dir() {
                    std::fs::create_dir_all(&self.dir)?;
                    state_file::sync_parent(&self.dir)?;
                }
                let file = OpenOptions::new().create_new(true).write(true).open(&path)?;
                let mut w = SegWriter::new(file);
                #[cfg(test)]
                {
                    w.faults = self.faults.clone();
                }
                let mut first = header(self.last_written);
                first.extend_from_slice(&buf);
                if let Err(e) = w.write_all(&first) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                self.segments.push(Segment {
                    first_seq: rec.seq,
                    last_seq: rec.seq,
                    path,
                    bytes: HEADER_LEN + len,
                    durable_bytes: 0,
                    durable_last: None,
                    undurable: 1,
                    writer: Some(w),
                    open: true,
                });
                self.dir_dirty = true;
            }
        }
        self.last_written = Some(rec.seq);
        Ok(dropped)
    }

    /// Makes appended records durable (one fsync for a group of appends), then records
    /// how far acknowledgements and durability have come (losing that only causes
    /// re-sends). Records whose fsync failed are rolled back and reported as lost.
    pub fn sync(&mut self) -> Result<(), SyncError> {
        let mut lost = 0;
        let mut failure = None;
        let mut rolled_back = Vec::new();
        if self.dir_dirty {
            match state_file::sync_parent(&self.dir.join("acked")) {
                Ok(()) => self.dir_dirty = false,
                Err(e) => failure = Some(e),
            }
        }
        let dir_failed = failure.is_some();
        let mut i = 0;
        while i < self.segments.len() {
            let seg = &mut self.segments[i];
            let Some(w) = seg.writer.as_mut() else {
                i += 1;
                continue;
            };
            if seg.bytes > seg.durable_bytes {
                let synced = if dir_failed && seg.durable_bytes == 0 {
                    Err(std::io::Error::other("cannot fsync the spool folder"))
                } else {
                    w.sync()
                };
                match synced {
                    Ok(()) => {
                        seg.durable_bytes = seg.bytes;
                        seg.durable_last = Some(seg.last_seq);
                        seg.undurable = 0;
                        self.durable_next = self.durable_next.max(seg.last_seq + 1);
                        self.commit_dirty = true;
                    }
                    Err(e) => {
                        tracing::warn!(file = %seg.path.display(), events = seg.undurable, error = %e, "cannot fsync the spool: rolled back to the last durable event");
                        lost += seg.undurable;
                        seg.undurable = 0;
                        failure.get_or_insert(e);
                        // Those numbers stay unused: holes, not events.
                        let gone = seg.durable_last.map_or(seg.first_seq, |d| d + 1)..=seg.last_seq;
                        rolled_back.push(*gone.start()..*gone.end() + 1);
                        let Some(keep) = seg.durable_last else {
                            let seg = self.segments.remove(i);
                            drop(seg.writer);
                            let _ = std::fs::remove_file(&seg.path);
                            self.acked_above.extend(gone);
                            self.cursor = None;
                            continue;
                        };
                        if w.truncate(seg.durable_bytes).is_err() {
                            seg.open = false;
                        }
                        seg.bytes = seg.durable_bytes;
                        seg.last_seq = keep;
                        self.acked_above.extend(gone);
                        self.cursor = None;
                    }
                }
            }
            let seg = &mut self.segments[i];
            if !seg.open {
                seg.writer = None;
            }
            i += 1;
        }
        // The next segment's header and the `.lost` note go by the last number spooled:
        // one rolled back is no longer that, or a restart counts it again.
        if let Some(floor) = rolled_back.iter().map(|r| r.start).min() {
            let durable = self.segments.iter().filter_map(|s| s.durable_last).max();
            self.last_written = durable.max(self.last_written.filter(|l| *l < floor));
        }
        for gone in &rolled_back {
            self.unspooled(gone.clone());
        }
        self.note_unspooled();
        // Numbers no segment holds (before the first event of a fresh spool) wait for nothing.
        self.advance_to(self.low_water);
        if self.commit_dirty {
            match self.write_commit() {
                Ok(()) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(source) => Err(SyncError { lost, rolled_back, source }),
            None => Ok(()),
        }
    }

    fn write_commit(&mut self) -> std::io::Result<()> {
        let text = format!("{} {} {}\n", self.low_water, self.durable_next, self.dropped_next);
        state_file::write(&self.dir.join("acked"), text.as_bytes())?;
        self.commit_dirty = false;
        Ok(())
    }

    /// Records that `seq` went to the broker: until its acknowledgement it is in doubt.
    pub fn mark_sent(&mut self, seq: u64) {
        if seq >= self.low_water && !self.acked_above.contains(&seq) {
            self.in_doubt.insert(seq);
        }
    }

    /// Drops the oldest segment that holds anything but in-doubt events, keeping those in
    /// a small segment of their own (written and fsync'd before the old one goes).
    /// Returns how many events were lost, or None when only in-doubt events are left.
    fn drop_oldest(&mut self) -> std::io::Result<Option<u64>> {
        let all_in_doubt = |seg: &Segment, in_doubt: &BTreeSet<u64>, acked: &BTreeSet<u64>, low: u64| {
            (seg.first_seq.max(low)..=seg.last_seq).all(|s| in_doubt.contains(&s) || acked.contains(&s))
        };
        let Some(idx) = self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
            .position(|seg| !all_in_doubt(seg, &self.in_doubt, &self.acked_above, self.low_water))
        else {
            return Ok(None);
        };
        let seg = &self.segments[idx];
        let (first_seq, last_seq) = (seg.first_seq, seg.last_seq);
        let kept: Vec<Record> = if self.in_doubt.range(first_seq..=last_seq).next().is_some() {
            let all = Window { offset: 0, prev_seq: None, from: 0, until: u64::MAX, limit: usize::MAX };
            format::read(&seg.path, first_seq, all)?
                .records
                .into_iter()
                .filter(|r| self.in_doubt.contains(&r.seq))
                .collect()
        } else {
            Vec::new()
        };
        let mut rewritten = None;
        if let (Some(first), Some(last)) = (kept.first(), kept.last()) {
            let path = self.dir.join(seg_name(first.seq));
            let mut bytes = header(None);
            for r in &kept {
                bytes.extend_from_slice(&encode(r));
            }
            state_file::write(&path, &bytes)?;
            let len = bytes.len() as u64;
            rewritten = Some(Segment {
                first_seq: first.seq,
                last_seq: last.seq,
                path,
                bytes: len,
                durable_bytes: len,
                durable_last: Some(last.seq),
                undurable: 0,
                writer: None,
                open: false,
            });
        }
        let seg = self.segments.remove(idx);
        let same_file = rewritten.as_ref().is_some_and(|r| r.path == seg.path);
        if let Some(r) = rewritten {
            self.segments.insert(idx, r);
        }
        let mut lost = 0;
        for s in first_seq.max(self.low_water)..=last_seq {
            if !self.in_doubt.contains(&s) && self.acked_above.insert(s) {
                lost += 1;
            }
        }
        self.dropped_next = self.dropped_next.max(last_seq + 1);
        self.advance_to(self.low_water);
        if let Err(e) = self.write_commit() {
            tracing::warn!(error = %e, "cannot record dropped events in the spool's commit file");
        }
        if !same_file {
            drop(seg.writer);
            std::fs::remove_file(&seg.path)?;
        }
        self.cursor = None;
        self.dropped += lost;
        Ok(Some(lost))
    }

    fn advance_to(&mut self, seq: u64) {
        let before = self.low_water;
        if seq > self.low_water {
            self.low_water = seq;
            self.acked_above = self.acked_above.split_off(&seq);
        }
        loop {
            while self.acked_above.first() == Some(&self.low_water) {
                self.acked_above.pop_first();
                self.low_water += 1;
            }
            // A number no segment holds was dropped, acknowledged, or never spooled:
            // nothing waits for it, so skip to the next segment that holds something.
            let low = self.low_water;
            if self.segments.iter().any(|s| s.first_seq <= low && low <= s.last_seq) {
                break;
            }
            match self.segments.iter().map(|s| s.first_seq).filter(|&f| f > low).min() {
                Some(next) => {
                    self.low_water = next;
                    self.acked_above = self.acked_above.split_off(&next);
                }
                None => break,
            }
        }
        if self.low_water != before {
            self.commit_dirty = true;
        }
    }

    /// Marks `seq` acknowledged; whole segments that are done are deleted.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.in_doubt.remove(&seq);
        if seq < self.low_water {
            return Ok(());
        }
        self.acked_above.insert(seq);
        let before = self.low_water;
        // Also skips numbers no segment holds (a fresh spool whose first event is not 0).
        self.advance_to(before);
        if self.low_water != before {
            self.compact()?;
        }
        Ok(())
    }

    /// Deletes segments nothing in which is needed any more, once the commit file says so.
    fn compact(&mut self) -> std::io::Result<()> {
        if self.tombstones.iter().any(|(to, _)| *to <= self.low_water) {
            if self.commit_dirty {
                self.write_commit()?;
            }
            let low = self.low_water;
            let (done, keep) = std::mem::take(&mut self.tombstones).into_iter().partition(|(to, _)| *to <= low);
            self.tombstones = keep;
            let done: Vec<(u64, PathBuf)> = done;
            for (_, path) in done {
                std::fs::remove_file(path)?;
            }
        }
        let done = |s: &Segment, low: u64| s.last_seq < low && s.bytes == s.durable_bytes;
        let n = self.segments.iter().take_while(|s| done(s, self.low_water)).count();
        // The newest segment stays while it takes appends.
        let n = if n == self.segments.len() && self.segments.last().is_some_and(|s| s.open) { n - 1 } else { n };
        if n == 0 {
            return Ok(());
        }
        if self.commit_dirty {
            self.write_commit()?;
        }
        for seg in self.segments.drain(..n) {
            drop(seg.writer);
            std::fs::remove_file(&seg.path)?;
        }
        self.cursor = None;
        Ok(())
    }

    /// Unacknowledged durable records with `seq >= from`, in order, at most `limit`.
    /// Damage met on the way is counted ([`Spool::corrupt`]) and skipped.
    pub fn read_pending(&mut self, from: u64, limit: usize) -> std::io::Result<Vec<Record>> {
        let from = from.max(self.low_water);
        let mut out = Vec::new();
        let resume = self.cursor.filter(|c| c.2 == from).and_then(|(first, off, next)| {
            self.segments.iter().position(|s| s.first_seq == first).map(|i| (i, off, next.checked_sub(1)))
        });
        let (mut idx, mut offset, mut prev) = match resume {
            Some(r) => r,
            None => (self.segments.iter().position(|s| s.last_seq >= from).unwrap_or(self.segments.len()), 0, None),
        };
        let mut next = from;
        let mut damaged = Vec::new();
        while idx < self.segments.len() && out.len() < limit {
            let seg = &self.segments[idx];
            let Some(until) = seg.durable_last else { break };
            let w = Window { offset, prev_seq: prev, from, until, limit: limit - out.len() };
            let read = format::read(&seg.path, seg.first_seq, w)?;
            damaged.extend(read.gaps.iter().map(|g| (seg.path.clone(), *g)));
            if let Some(t) = read.tail_damage.filter(|&t| t <= until) {
                damaged.push((seg.path.clone(), Gap { from: t, to: until + 1 }));
            }
            next = read.records.last().map_or(next, |r| r.seq + 1);
            self.cursor = Some((seg.first_seq, read.end, next));
            let full = read.records.len() >= limit - out.len();
            out.extend(read.records.into_iter().filter(|r| !self.acked_above.contains(&r.seq)));
            // Nothing after a segment that is not wholly durable is durable either.
            if full || idx + 1 == self.segments.len() || seg.durable_last != Some(seg.last_seq) {
                break;
            }
            idx += 1;
            offset = 0;
            prev = None;
        }
        if !damaged.is_empty() {
            for (path, gap) in damaged {
                self.damage(&path, gap);
            }
            out.retain(|r| !self.acked_above.contains(&r.seq));
            self.advance_to(self.low_water);
        }
        Ok(out)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        #[cfg(test)]
        if self.crashed {
            return;
        }
        let _ = self.sync();
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
