//! The bytes of a spool segment, and a reader that survives damage.
//!
//! Format 3 (`CLEFSPL3`): a 28-byte header `[magic 8][prev u64 LE][crc32 u32 LE][pad 8]`,
//! where `prev` is the last sequence number written before this segment (`u64::MAX`:
//! none) so a segment that disappears is noticed, then records
//! `[mark 4][len u32 LE][crc32 u32 LE][seq u64 LE][topic len u16 LE][topic][payload]`.
//! `len` counts the bytes after the checksum; the checksum covers `len` and everything
//! after it, so a flipped bit in the length or the sequence number is caught like one in
//! the payload. `mark` is four bytes that never occur in UTF-8 (topic) or JSON (payload):
//! after damage the reader looks for the next mark whose record checks out and goes on
//! from there, so damage never hides what follows it.
//!
//! Formats 2 (`CLEFSPL2`, checksum over the body only) and 1 (no magic, no checksum) are
//! still read, never written.

use std::fs::File;
use std::io::{BufReader, Read as _, Seek, SeekFrom};
use std::path::Path;

use super::Record;

/// The first bytes of a format-3 segment.
pub(super) const MAGIC: &[u8; 8] = b"CLEFSPL3";
/// The first bytes of a format-2 segment.
const MAGIC2: &[u8; 8] = b"CLEFSPL2";
/// Bytes of a format-3 segment header.
pub(super) const HEADER_LEN: u64 = 28;
/// The start of every format-3 record: bytes no UTF-8 text contains.
const MARK: [u8; 4] = [0xC1, 0xEF, 0xF5, 0xFE];
/// Mark, length, checksum.
const REC_HEAD: u64 = 12;
/// The largest record body read: a bigger length is damage.
const MAX_BODY: u64 = 16 << 20;

/// Bytes one record takes in a segment.
pub(super) fn record_len(r: &Record) -> u64 {
    REC_HEAD + 8 + 2 + (r.topic.len() + r.payload.len()) as u64
}

/// A format-3 segment header.
pub(super) fn header(prev: Option<u64>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN as usize);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&prev.unwrap_or(u64::MAX).to_le_bytes());
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf
}

/// One record in format 3.
pub(super) fn encode(rec: &Record) -> Vec<u8> {
    let len = record_len(rec);
    let mut buf = Vec::with_capacity(len as usize);
    buf.extend_from_slice(&MARK);
    buf.extend_from_slice(&((len - REC_HEAD) as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&rec.seq.to_le_bytes());
    buf.extend_from_slice(&(rec.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(rec.topic.as_bytes());
    buf.extend_from_slice(&rec.payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[4..8]);
    h.update(&buf[12..]);
    buf[8..12].copy_from_slice(&h.finalize().to_le_bytes());
    buf
}

/// Sequence numbers `from..to` that damage took: their bytes are unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gap {
    /// First number lost.
    pub from: u64,
    /// One past the last number lost (when the damage ends a segment: the next
    /// segment's first number, or the durable watermark; see [`Read::tail_damage`]).
    pub to: u64,
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub(super) struct ReadOut {
    /// Records kept, in order.
    pub records: Vec<Record>,
    /// Where each of them starts (format 3).
    pub starts: Vec<u64>,
    /// Offset after the last record read (or where reading stopped).
    pub end: u64,
    /// Damage between two readable records (or a record and the segment's start).
    pub gaps: Vec<Gap>,
    /// Unreadable bytes at the end: the sequence number after the last good record.
    /// A torn write (never durable) or damage: the caller knows which.
    pub tail_damage: Option<u64>,
    /// Legacy records whose checksum did not match (formats 1 and 2 cannot say which
    /// numbers they held).
    pub legacy_corrupt: u64,
    /// The segment's format 3 header: the last number written before it.
    pub prev: Option<u64>,
    /// The header checked out (when it did not, `prev` is unknown).
    pub header_ok: bool,
    /// Format 3 (appendable layout).
    pub current: bool,
    /// A format-3 record checked out somewhere in the file (kept or not): the file is
    /// format 3 whatever its header says.
    pub valid: bool,
}

/// Where to read and what to keep.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// Byte offset (0: the segment's start).
    pub offset: u64,
    /// The number of the last record before `offset` (for gaps), if known.
    pub prev_seq: Option<u64>,
    /// Keep records with `seq >= from`.
    pub from: u64,
    /// Stop before a record with `seq > until` (not yet durable).
    pub until: u64,
    /// Most records kept.
    pub limit: usize,
}

/// Reads a segment. `first_seq` (from the file name) stands in for the record before
/// the first when damage starts the segment.
pub(super) fn read(path: &Path, first_seq: u64, w: Window) -> std::io::Result<ReadOut> {
    let mut f = BufReader::new(File::open(path)?);
    let size = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 8];
    let has_magic = size >= 8 && f.read_exact(&mut magic).is_ok();
    if has_magic && &magic == MAGIC {
        if size < HEADER_LEN {
            // Cut while it was being created: nothing in it.
            return Ok(ReadOut { end: size, tail_damage: Some(first_seq), current: true, ..ReadOut::default() });
        }
        let mut rest = [0u8; 20];
        f.read_exact(&mut rest)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&magic);
        h.update(&rest[..8]);
        let prev = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        let ok = h.finalize().to_le_bytes() == rest[8..12];
        let mut r = Scanner { f, pos: HEADER_LEN, size }.read(first_seq, w)?;
        r.prev = (ok && prev != u64::MAX).then_some(prev);
        r.header_ok = ok;
        r.current = true;
        return Ok(r);
    }
    if has_magic && &magic == MAGIC2 {
        // One flipped bit turns `CLEFSPL3` into `CLEFSPL2`: a format-2 reading that finds
        // nothing whole may be a format-3 segment with a damaged header.
        let out = legacy(f, size, true, w)?;
        if out.legacy_corrupt == 0 && !out.records.is_empty() {
            return Ok(out);
        }
        return Ok(damaged_header(path, size, first_seq, w)?.unwrap_or(out));
    }
    if has_magic {
        // Not a known magic: a format-3 segment whose header was damaged still has
        // records that check out; a format-1 segment has none.
        if let Some(r) = damaged_header(path, size, first_seq, w)? {
            return Ok(r);
        }
        f = BufReader::new(File::open(path)?);
    }
    legacy(f, size, false, w)
}

/// The segment read as format 3 whatever its header says, if a format-3 record checks
/// out in it (a legacy segment has none, short of a 32-bit checksum matching by chance).
fn damaged_header(path: &Path, size: u64, first_seq: u64, w: Window) -> std::io::Result<Option<ReadOut>> {
    if size < HEADER_LEN {
        return Ok(None);
    }
    let mut r = Scanner { f: BufReader::new(File::open(path)?), pos: 0, size }.read(first_seq, w)?;
    r.current = true;
    Ok(r.valid.then_some(r))
}

struct Scanner {
    f: BufReader<File>,
    /// The reader's position.
    pos: u64,
    size: u64,
}

impl Scanner {
    fn seek(&mut self, to: u64) -> std::io::Result<()> {
        if to != self.pos {
            self.f.seek_relative(to as i64 - self.pos as i64)?;
            self.pos = to;
        }
        Ok(())
    }

    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.f.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// The record at `at`, if one checks out there, and the offset after it.
    fn record_at(&mut self, at: u64) -> std::io::Result<Option<(Record, u64)>> {
        if at + REC_HEAD + 10 > self.size {
            return Ok(None);
        }
        self.seek(at)?;
        let mut head = [0u8; REC_HEAD as usize];
        self.take(&mut head)?;
        let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        if head[..4] != MARK || !(10..=MAX_BODY).contains(&len) || at + REC_HEAD + len > self.size {
            return Ok(None);
        }
        let mut body = vec![0u8; len as usize];
        self.take(&mut body)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&head[4..8]);
        h.update(&body);
        let tlen = usize::from(u16::from_le_bytes([body[8], body[9]]));
        if h.finalize().to_le_bytes() != head[8..12] || 10 + tlen > body.len() {
            return Ok(None);
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        let topic = String::from_utf8_lossy(&body[10..10 + tlen]).into_owned();
        Ok(Some((Record { seq, topic, payload: body[10 + tlen..].to_vec() }, at + REC_HEAD + len)))
    }

    /// The next offset after `at` where a whole record checks out.
    fn resync(&mut self, at: u64) -> std::io::Result<Option<(Record, u64, u64)>> {
        let mut cand = at + 1;
        loop {
            // Find the next mark, byte by byte through the buffer.
            self.seek(cand)?;
            let mut window = [0u8; 4];
            let mut filled = 0;
            let start = loop {
                if self.pos >= self.size {
                    return Ok(None);
                }
                let mut b = [0u8; 1];
                self.take(&mut b)?;
                if filled == 4 {
                    window.copy_within(1.., 0);
                    window[3] = b[0];
                } else {
                    window[filled] = b[0];
                    filled += 1;
                }
                if filled == 4 && window == MARK {
                    break self.pos - 4;
                }
            };
            if let Some((rec, next)) = self.record_at(start)? {
                return Ok(Some((rec, start, next)));
            }
            cand = start + 1;
        }
    }

    fn read(mut self, first_seq: u64, w: Window) -> std::io::Result<ReadOut> {
        let mut pos = if w.offset == 0 { HEADER_LEN } else { w.offset };
        let mut out = ReadOut { end: pos, ..ReadOut::default() };
        let mut prev = w.prev_seq.or(first_seq.checked_sub(1));
        while pos < self.size {
            let (rec, next) = match self.record_at(pos)? {
                Some(found) => found,
                None => match self.resync(pos)? {
                    Some((rec, _, next)) => {
                        let from = prev.map_or(first_seq, |p| p + 1);
                        if rec.seq > from {
                            out.gaps.push(Gap { from, to: rec.seq });
                        }
                        (rec, next)
                    }
                    None => {
                        out.tail_damage = Some(prev.map_or(first_seq, |p| p + 1));
                        out.end = pos;
                        break;
                    }
                },
            };
            out.valid = true;
            if rec.seq > w.until {
                out.end = pos;
                break;
            }
            let start = next - (REC_HEAD + 10 + (rec.topic.len() + rec.payload.len()) as u64);
            pos = next;
            out.end = pos;
            prev = Some(rec.seq);
            if rec.seq >= w.from {
                out.records.push(rec);
                out.starts.push(start);
                if out.records.len() >= w.limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Formats 1 and 2: a length that does not fit ends the segment.
fn legacy(mut f: BufReader<File>, size: u64, checksummed: bool, w: Window) -> std::io::Result<ReadOut> {
    let head_len: u64 = if checksummed { 8 } else { 4 };
    let mut pos = if w.offset == 0 && checksummed { 8 } else { w.offset };
    f.seek(SeekFrom::Start(pos))?;
    let mut out = ReadOut { end: pos, ..ReadOut::default() };
    let mut head = [0u8; 8];
    while pos + head_len <= size {
        f.read_exact(&mut head[..head_len as usize])?;
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let body_len = len - (head_len - 4).min(len);
        if body_len < 10 || pos + 4 + len > size {
            break;
        }
        let mut body = vec![0u8; body_len as usize];
        f.read_exact(&mut body)?;
        let tlen = usize::from(u16::from_le_bytes([body[8], body[9]]));
        let crc_ok = !checksummed || crc32fast::hash(&body) == u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        if crc_ok && 10 + tlen <= body.len() && seq > w.until {
            break;
        }
        pos += 4 + len;
        out.end = pos;
        if !crc_ok || 10 + tlen > body.len() {
            out.legacy_corrupt += 1;
            continue;
        }
        // Format 1 has no checksum: only what looks like an event (a text topic, a JSON
        // object) is taken; anything else is damage, and ends the segment.
        let (topic, payload) = (&body[10..10 + tlen], &body[10 + tlen..]);
        if !checksummed
            && (tlen == 0
                || std::str::from_utf8(topic).is_err()
                || payload.first() != Some(&b'{')
                || payload.last() != Some(&b'}'))
        {
            out.legacy_corrupt += 1;
            break;
        }
        if seq >= w.from {
            let topic = String::from_utf8_lossy(&body[10..10 + tlen]).into_owned();
            out.records.push(Record { seq, topic, payload: body[10 + tlen..].to_vec() });
            if out.records.len() >= w.limit {
                break;
            }
        }
    }
    Ok(out)
}
