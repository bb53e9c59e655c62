//! Whether a file is shorter than its own container says: a Matroska (or WebM) muxer
//! writes the size of its Segment, the element that holds everything else, when it
//! finishes; a file cut short (a copy interrupted, a disk that filled up) ends before that
//! size. This tells a truncated Matroska file from a whole one even where nothing else
//! does (Matroska gives no track its own length, and GStreamer warns of nothing).

use std::io::Read;
use std::path::Path;

/// The EBML header's element id, which every Matroska file starts with.
const EBML: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
/// The Segment's element id.
const SEGMENT: [u8; 4] = [0x18, 0x53, 0x80, 0x67];
/// Bytes read from the start of the file: the EBML header is a few dozen.
const HEAD: u64 = 512;

/// Whether `path` is a Matroska file whose Segment runs past the file's end. `false` when
/// it is not Matroska, its Segment's size is unknown (a live recording), or it cannot be
/// read, or is not a plain file (a FIFO given as `file://` would block the open forever):
/// no evidence.
pub(super) fn matroska_cut_short(path: &Path) -> bool {
    // Looked at before opening: opening a FIFO waits for a writer that may never come.
    let Ok(len) = std::fs::metadata(path).and_then(|m| if m.is_file() { Ok(m.len()) } else { Err(not_plain()) }) else {
        return false;
    };
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut head = Vec::with_capacity(HEAD as usize);
    if file.take(HEAD).read_to_end(&mut head).is_err() {
        return false;
    }
    segment_end(&head).is_some_and(|end| end > len)
}

/// What [`matroska_cut_short`] makes of a path that is not a plain file.
fn not_plain() -> std::io::Error {
    std::io::Error::other("not a plain file")
}

/// Where the Segment says it ends (in bytes from the start), from the file's first bytes.
fn segment_end(head: &[u8]) -> Option<u64> {
    let rest = head.strip_prefix(&EBML)?;
    let (header, used) = vint(rest)?;
    let at = (EBML.len() + used).checked_add(usize::try_from(header?).ok()?)?;
    let rest = head.get(at..)?.strip_prefix(&SEGMENT)?;
    let (size, used) = vint(rest)?;
    u64::try_from(at + SEGMENT.len() + used).ok()?.checked_add(size?)
}

/// An EBML variable-size integer at the start of `bytes`: its value (`None` for the
/// reserved "unknown size", all value bits set) and its length in bytes.
fn vint(bytes: &[u8]) -> Option<(Option<u64>, usize)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for b in bytes.get(1..len)? {
        value = (value << 8) | u64::from(*b);
    }
    let unknown = value == (1u64 << (7 * len)) - 1;
    Some(((!unknown).then_some(value), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EBML header of `header` bytes, then a Segment of the size written as `size`.
    fn head(header: usize, size: &[u8]) -> Vec<u8> {
        let mut b = EBML.to_vec();
        b.push(0x80 | header as u8);
        b.extend(std::iter::repeat_n(0x42, header));
        b.extend(SEGMENT);
        b.extend(size);
        b
    }

    #[test]
    fn the_segment_size_says_where_a_matroska_file_ends() {
        // 8-byte size 1000: the Segment's data starts after 4 + 1 + 31 + 4 + 8 bytes.
        let h = head(31, &[0x01, 0, 0, 0, 0, 0, 0x03, 0xE8]);
        assert_eq!(segment_end(&h), Some(48 + 1000));
        // A one-byte size.
        assert_eq!(segment_end(&head(20, &[0x85])), Some(4 + 1 + 20 + 4 + 1 + 5));
        // Unknown size (a live recording): no evidence.
        assert_eq!(segment_end(&head(31, &[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])), None);
        assert_eq!(segment_end(&head(31, &[0xFF])), None);
        // Not Matroska, or too short to tell.
        assert_eq!(segment_end(b"\x00\x00\x00\x18ftypmp42"), None);
        assert_eq!(segment_end(&h[..40]), None);
    }

    #[test]
    fn a_file_cut_before_its_segment_ends_is_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.mkv");
        let mut bytes = head(31, &[0x01, 0, 0, 0, 0, 0, 0x03, 0xE8]);
        bytes.resize(48 + 1000, 0);
        std::fs::write(&whole, &bytes).unwrap();
        assert!(!matroska_cut_short(&whole));
        let cut = dir.path().join("cut.mkv");
        std::fs::write(&cut, &bytes[..600]).unwrap();
        assert!(matroska_cut_short(&cut));
        assert!(!matroska_cut_short(&dir.path().join("missing.mkv")));
    }

    /// A FIFO given as a file is no evidence, and looking at it does not wait for a writer
    /// (opening it would, forever).
    #[test]
    fn a_fifo_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.mkv");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(matroska_cut_short(&path)));
        let answer = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(answer, Ok(false), "a FIFO is looked at without being opened");
    }
}
