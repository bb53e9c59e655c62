//! The on-disk spool: every event is written here (and fsync'd) before it is sent, and
//! forgotten only once the broker has acknowledged it. While the broker is away the spool
//! grows, up to `spool_max_mb`; then whole segments are dropped, oldest first, and every
//! event lost that way is counted. Events already sent whose acknowledgement never came
//! (the broker may have them) are never dropped: they are kept and sent again, so the drop
//! count is exactly the number of events a consumer will never see. After a crash or power cut the spool is read back and
//! whatever was not acknowledged is sent again, in `seq` order.
//!
//! Layout: `DIR/<first-seq, 20 digits>.seg`, each the magic `CLEFSPL2` and a run of
//! records `[len u32 LE][crc32 u32 LE][seq u64 LE][topic len u16 LE][topic][payload]`
//! (`len` counts from the checksum on; the checksum covers what follows it), plus
//! `DIR/acked` holding the lowest sequence number not yet acknowledged. A torn record at
//! the end of a segment (power cut mid-write) is ignored; a record whose checksum does not
//! match is skipped and counted ([`Spool::corrupt`]), never sent. Segments written before
//! checksums (no magic) are still read. Appends never go to a segment of an earlier run.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Written by this process (so appends may go on in it).
    own: bool,
}

/// The first bytes of a segment with checksummed records.
const MAGIC: &[u8; 8] = b"CLEFSPL2";

/// The spool in one folder.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    writer: Option<File>,
    /// Every seq below this is acknowledged (or dropped).
    low_water: u64,
    /// Acknowledged sequence numbers above `low_water`.
    acked_above: BTreeSet<u64>,
    /// Events dropped because the spool was full.
    dropped: u64,
    /// Records skipped at open because their checksum did not match.
    corrupt: u64,
    /// Sent and not acknowledged (at most a send window): kept when their segment goes.
    in_doubt: BTreeSet<u64>,
    dirty: bool,
    acked_dirty: bool,
    /// Where the last read stopped: (segment's first seq, byte offset, next seq), so
    /// sending the live tail or a long backlog never re-reads a segment.
    cursor: Option<(u64, u64, u64)>,
}

fn seg_name(first: u64) -> String {
    format!("{first:020}.seg")
}

impl Spool {
    /// Opens (or creates) the spool, bounded to `max_bytes` on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let low_water =
            std::fs::read_to_string(dir.join("acked")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mut segments = Vec::new();
        // Sequence numbers missing inside a segment (one that kept only in-doubt events,
        // or a record skipped as corrupt).
        let mut holes = BTreeSet::new();
        let mut corrupt = 0;
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        names.sort();
        for path in names {
            let read = read_records(&path, 0, usize::MAX, 0)?;
            if read.corrupt > 0 {
                tracing::warn!(file = %path.display(), records = read.corrupt, "skipped spooled events whose checksum does not match");
                corrupt += read.corrupt;
            }
            let (Some(first), Some(last)) = (read.records.first(), read.records.last()) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            for pair in read.records.windows(2) {
                holes.extend((pair[0].seq + 1..pair[1].seq).filter(|s| *s >= low_water));
            }
            segments.push(Segment { first_seq: first.seq, last_seq: last.seq, path, bytes: read.end, own: false });
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(64 * 1024),
            segment_bytes: (max_bytes / 8).clamp(16 * 1024, 8 * 1024 * 1024),
            segments,
            writer: None,
            low_water,
            acked_above: holes,
            dropped: 0,
            corrupt,
            in_doubt: BTreeSet::new(),
            dirty: false,
            acked_dirty: false,
            cursor: None,
        };
        spool.advance_to(low_water)?;
        spool.compact()?;
        Ok(spool)
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

    /// Records skipped at open because their checksum did not match.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// The lowest sequence number the spool has not seen: after everything it holds and
    /// everything acknowledged. The sequence counter never starts below it.
    pub fn next_seq(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.last_seq + 1).max(self.low_water)
    }

    /// Appends one record (not yet durable: call [`Spool::sync`]). Drops the oldest
    /// segments when the bound would be exceeded; returns how many events that dropped.
    /// On an error (disk full, read-only folder) the record is not in the spool and the
    /// spool stays consistent: the next append may succeed.
    pub fn append(&mut self, rec: &Record) -> std::io::Result<u64> {
        let len = record_len(rec);
        let mut dropped = 0;
        while self.bytes() + len > self.max_bytes && self.segments.len() > 1 {
            match self.drop_oldest()? {
                Some(n) => dropped += n,
                None => break,
            }
        }
        let buf = encode(rec);
        let fits = self.segments.last().is_some_and(|s| s.own && s.bytes + len <= self.segment_bytes);
        match self.writer.as_mut().filter(|_| fits) {
            Some(w) => {
                if let Err(e) = w.write_all(&buf) {
                    // Cut what was half written; if even that fails, start a new segment.
                    let keep = self.segments.last().map_or(0, |s| s.bytes);
                    if w.set_len(keep).is_err() {
                        self.writer = None;
                        if let Some(seg) = self.segments.last_mut() {
                            seg.own = false;
                        }
                    }
                    return Err(e);
                }
                if let Some(seg) = self.segments.last_mut() {
                    seg.last_seq = rec.seq;
                    seg.bytes += len;
                }
            }
            None => {
                if let Some(w) = self.writer.take() {
                    w.sync_data()?;
                }
                let path = self.dir.join(seg_name(rec.seq));
                let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
                let written = f.write_all(MAGIC).and_then(|()| f.write_all(&buf)).and_then(|()| sync_dir(&self.dir));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                let bytes = MAGIC.len() as u64 + len;
                self.segments.push(Segment { first_seq: rec.seq, last_seq: rec.seq, path, bytes, own: true });
                self.writer = Some(f);
            }
        }
        self.dirty = true;
        Ok(dropped)
    }

    /// Makes appended records durable (one fsync for a group of appends) and records
    /// how far acknowledgements have come (losing that only causes re-sends).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.acked_dirty {
            let tmp = self.dir.join("acked.tmp");
            std::fs::write(&tmp, format!("{}\n", self.low_water))?;
            std::fs::rename(tmp, self.dir.join("acked"))?;
            self.acked_dirty = false;
        }
        if self.dirty {
            if let Some(w) = self.writer.as_ref() {
                w.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Records that `seq` went to the broker: until its acknowledgement it is in doubt.
    pub fn mark_sent(&mut self, seq: u64) {
        if seq >= self.low_water && !self.acked_above.contains(&seq) {
            self.in_doubt.insert(seq);
        }
    }

    /// Drops the oldest segment that holds anything but in-doubt events, keeping those in
    /// a small segment of their own. Returns how many events were lost, or None when only
    /// in-doubt events are left to drop.
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
        let seg = self.segments.remove(idx);
        let kept: Vec<Record> = if self.in_doubt.range(seg.first_seq..=seg.last_seq).next().is_some() {
            read_records(&seg.path, 0, usize::MAX, 0)?
                .records
                .into_iter()
                .filter(|r| self.in_doubt.contains(&r.seq))
                .collect()
        } else {
            Vec::new()
        };
        let mut lost = 0;
        for s in seg.first_seq.max(self.low_water)..=seg.last_seq {
            if !self.in_doubt.contains(&s) && self.acked_above.insert(s) {
                lost += 1;
            }
        }
        std::fs::remove_file(&seg.path)?;
        if let (Some(first), Some(last)) = (kept.first(), kept.last()) {
            let path = self.dir.join(seg_name(first.seq));
            let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
            f.write_all(MAGIC)?;
            let mut bytes = MAGIC.len() as u64;
            for r in &kept {
                f.write_all(&encode(r))?;
                bytes += record_len(r);
            }
            f.sync_data()?;
            self.segments.insert(idx, Segment { first_seq: first.seq, last_seq: last.seq, path, bytes, own: false });
        }
        self.cursor = None;
        self.dropped += lost;
        self.advance_to(self.low_water)?;
        Ok(Some(lost))
    }

    fn advance_to(&mut self, seq: u64) -> std::io::Result<()> {
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
        self.acked_dirty = true;
        Ok(())
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
        self.advance_to(before)?;
        if self.low_water != before {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> std::io::Result<()> {
        while self.segments.len() > 1 && self.segments[0].last_seq < self.low_water {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
        }
        if self.segments.len() == 1 && self.segments[0].last_seq < self.low_water && self.writer.is_none() {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
        }
        Ok(())
    }

    /// Unacknowledged records with `seq >= from`, in order, at most `limit`.
    pub fn read_pending(&mut self, from: u64, limit: usize) -> std::io::Result<Vec<Record>> {
        let from = from.max(self.low_water);
        let mut out = Vec::new();
        let resume = self
            .cursor
            .filter(|c| c.2 == from)
            .and_then(|(first, off, _)| self.segments.iter().position(|s| s.first_seq == first).map(|i| (i, off)));
        let (mut idx, mut offset) = match resume {
            Some(r) => r,
            None => (self.segments.iter().position(|s| s.last_seq >= from).unwrap_or(self.segments.len()), 0),
        };
        let mut next = from;
        while idx < self.segments.len() && out.len() < limit {
            let seg = &self.segments[idx];
            let ReadRecords { records: recs, end, .. } = read_records(&seg.path, offset, limit - out.len(), from)?;
            self.cursor = Some((seg.first_seq, end, recs.last().map_or(next, |r| r.seq + 1)));
            next = self.cursor.map_or(next, |c| c.2);
            let full = recs.len() >= limit - out.len();
            out.extend(recs.into_iter().filter(|r| !self.acked_above.contains(&r.seq)));
            if full || idx + 1 == self.segments.len() {
                break;
            }
            idx += 1;
            offset = 0;
        }
        Ok(out)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes one record takes in a segment.
fn record_len(r: &Record) -> u64 {
    (4 + 4 + 8 + 2 + r.topic.len() + r.payload.len()) as u64
}

/// One record in the segment format.
fn encode(rec: &Record) -> Vec<u8> {
    let len = record_len(rec);
    let mut buf = Vec::with_capacity(len as usize);
    buf.extend_from_slice(&((len - 4) as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&rec.seq.to_le_bytes());
    buf.extend_from_slice(&(rec.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(rec.topic.as_bytes());
    buf.extend_from_slice(&rec.payload);
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// What [`read_records`] found.
struct ReadRecords {
    records: Vec<Record>,
    /// The offset after the last whole record read.
    end: u64,
    /// Whole records skipped because their checksum did not match.
    corrupt: u64,
}

/// Reads records starting at byte `offset` (0: the segment's start), keeping those with
/// `seq >= from`, until `limit` are kept or the file ends.
fn read_records(path: &Path, offset: u64, limit: usize, from: u64) -> std::io::Result<ReadRecords> {
    let mut f = BufReader::new(File::open(path)?);
    let size = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 8];
    let checksummed = size >= 8 && f.read_exact(&mut magic).is_ok() && &magic == MAGIC;
    let head_len: u64 = if checksummed { 8 } else { 4 };
    let mut pos = if offset == 0 && checksummed { MAGIC.len() as u64 } else { offset };
    f.seek(SeekFrom::Start(pos))?;
    let mut out = ReadRecords { records: Vec::new(), end: pos, corrupt: 0 };
    let mut head = [0u8; 8];
    while pos + head_len <= size {
        f.read_exact(&mut head[..head_len as usize])?;
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let body_len = len - (head_len - 4).min(len);
        if body_len < 10 || pos + 4 + len > size {
            break; // torn tail
        }
        let mut body = vec![0u8; body_len as usize];
        f.read_exact(&mut body)?;
        pos += 4 + len;
        out.end = pos;
        let tlen = usize::from(u16::from_le_bytes([body[8], body[9]]));
        let crc_ok = !checksummed || crc32fast::hash(&body) == u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !crc_ok || 10 + tlen > body.len() {
            out.corrupt += 1;
            continue;
        }
        let seq = u64::from_le_bytes([body[0], body[1], body[2], body[3], body[4], body[5], body[6], body[7]]);
        if seq >= from {
            let topic = String::from_utf8_lossy(&body[10..10 + tlen]).into_owned();
            out.records.push(Record { seq, topic, payload: body[10 + tlen..].to_vec() });
            if out.records.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
