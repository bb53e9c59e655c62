//! The spool on a real disk: appends, acknowledgements, restarts, corruption, full disks.

use super::test_support::{pending_seqs, segment_files};
use super::*;
use std::io::Write;

fn rec(seq: u64) -> Record {
    Record { seq, topic: "t/x".into(), payload: vec![b'x'; 100] }
}

#[test]
fn survives_reopen_and_forgets_acknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..10 {
        s.append(&rec(i)).unwrap();
    }
    s.sync().unwrap();
    for i in 0..4 {
        s.ack(i).unwrap();
    }
    s.ack(6).unwrap();
    assert_eq!(s.pending(), 5);
    drop(s);
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    let seqs: Vec<u64> = pending_seqs(&mut s);
    // 6 was acknowledged above the low-water mark; after a restart it is sent again
    // (a duplicate the consumer drops by seq), never lost.
    assert_eq!(seqs, vec![4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_spool_whose_first_event_is_not_zero_forgets_what_was_acknowledged() {
    // The sequence continues across runs (state_dir/seq), so a fresh spool often
    // starts at a high number: acknowledging it must still let the events go.
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 100..110 {
        s.append(&rec(i)).unwrap();
    }
    for i in 100..110 {
        s.mark_sent(i);
        s.ack(i).unwrap();
    }
    assert_eq!(s.pending(), 0);
    drop(s);
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.pending(), 0, "nothing acknowledged is sent again after a restart");
    assert!(s.read_pending(0, 100).unwrap().is_empty());
}

#[test]
fn a_torn_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    s.append(&rec(0)).unwrap();
    s.append(&rec(1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let seg = segment_files(dir.path()).remove(0);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.corrupt(), 0, "a torn tail after the durable watermark is not damage");
    s.append(&rec(2)).unwrap();
    s.sync().unwrap();
    let seqs: Vec<u64> = pending_seqs(&mut s);
    assert_eq!(seqs, vec![0, 1, 2]);
}

#[test]
fn events_in_doubt_are_kept_when_their_segment_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 64 * 1024).unwrap();
    for i in 0..10 {
        s.append(&rec(i)).unwrap();
    }
    // 0..5 went out; 0 and 1 were acknowledged, 2..5 were in flight when the
    // connection died.
    for i in 0..5 {
        s.mark_sent(i);
    }
    s.ack(0).unwrap();
    s.ack(1).unwrap();
    let mut dropped = 0;
    for i in 10..2000 {
        dropped += s.append(&rec(i)).unwrap();
    }
    assert!(s.bytes() <= 64 * 1024 + 3 * 200, "bounded: {}", s.bytes());
    s.sync().unwrap();
    let pending: Vec<u64> = pending_seqs(&mut s);
    assert_eq!(&pending[..3], &[2, 3, 4], "in-doubt events are kept and come first");
    assert_eq!(pending.len() as u64 + dropped + 2, 2000, "kept, acknowledged or counted: {dropped}");
    assert_eq!(s.pending(), pending.len() as u64);
    assert_eq!(pending.last(), Some(&1999));
    drop(s);
    let mut s = Spool::open(dir.path(), 64 * 1024).unwrap();
    let again: Vec<u64> = pending_seqs(&mut s);
    assert_eq!(again, pending, "the kept events survive a restart");
    for seq in again {
        s.ack(seq).unwrap();
    }
    assert_eq!(s.pending(), 0);
    assert!(segment_files(dir.path()).len() <= 1, "acknowledged segments are deleted after a restart too");
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 64 * 1024).unwrap();
    let mut dropped = 0;
    for i in 0..2000 {
        dropped += s.append(&rec(i)).unwrap();
    }
    assert!(s.bytes() <= 64 * 1024, "bounded: {}", s.bytes());
    assert!(dropped > 0);
    assert_eq!(dropped, s.dropped());
    s.sync().unwrap();
    let pending = s.read_pending(0, 10_000).unwrap();
    assert_eq!(pending.len() as u64 + dropped, 2000, "every event is either kept or counted");
    assert_eq!(pending.last().unwrap().seq, 1999, "the newest are kept");
    assert!(pending.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn a_record_with_a_bad_checksum_is_skipped_and_counted_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..3 {
        s.append(&rec(i)).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    // Flip one payload byte of the middle record: its length field stays valid.
    let seg = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let middle = (HEADER_LEN + record_len(&rec(0))) as usize + 30;
    bytes[middle] ^= 0x55;
    std::fs::write(seg, bytes).unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.corrupt(), 1);
    let pending = s.read_pending(0, 100).unwrap();
    assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 2]);
    assert!(pending.iter().all(|r| r.payload == rec(r.seq).payload), "nothing garbled is sent");
    assert_eq!(s.pending(), 2);
    assert_eq!(s.next_seq(), 3);
}

#[test]
fn segments_written_before_checksums_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    for seq in 0..2u64 {
        // Format 1 held events: a JSON object under a text topic.
        let r = Record { payload: format!("{{\"seq\":{seq}}}").into_bytes(), ..rec(seq) };
        old.extend_from_slice(&((8 + 2 + r.topic.len() + r.payload.len()) as u32).to_le_bytes());
        old.extend_from_slice(&seq.to_le_bytes());
        old.extend_from_slice(&(r.topic.len() as u16).to_le_bytes());
        old.extend_from_slice(r.topic.as_bytes());
        old.extend_from_slice(&r.payload);
    }
    std::fs::write(dir.path().join(seg_name(0)), old).unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    s.append(&rec(2)).unwrap();
    s.sync().unwrap();
    let seqs: Vec<u64> = pending_seqs(&mut s);
    assert_eq!(seqs, vec![0, 1, 2]);
    assert_eq!(segment_files(dir.path()).len(), 2, "the new record went to a new, checksummed segment");
}

#[test]
fn a_failed_append_leaves_the_spool_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut s = Spool::open(&spool_dir, 64 * 1024).unwrap();
    s.append(&rec(0)).unwrap();
    s.sync().unwrap();
    // The folder is replaced by a file: creating the next segment fails.
    let moved = dir.path().join("moved");
    std::fs::rename(&spool_dir, &moved).unwrap();
    std::fs::write(&spool_dir, b"not a folder").unwrap();
    s.segments.last_mut().unwrap().open = false;
    assert!(s.append(&rec(1)).is_err());
    assert_eq!(s.pending(), 1, "the failed record is not counted as spooled");
    // The folder comes back: appends work again, and nothing half-written is read.
    std::fs::remove_file(&spool_dir).unwrap();
    std::fs::rename(&moved, &spool_dir).unwrap();
    s.append(&rec(2)).unwrap();
    s.sync().unwrap();
    let seqs: Vec<u64> = pending_seqs(&mut s);
    assert_eq!(seqs, vec![0, 2]);
    drop(s);
    let mut s = Spool::open(&spool_dir, 64 * 1024).unwrap();
    let seqs: Vec<u64> = pending_seqs(&mut s);
    assert_eq!(seqs, vec![0, 2]);
    assert_eq!(s.corrupt(), 0);
}

#[test]
fn next_seq_counts_acknowledged_events_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.next_seq(), 0);
    for i in 0..5 {
        s.append(&rec(i)).unwrap();
        s.mark_sent(i);
    }
    for i in 0..5 {
        s.ack(i).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.pending(), 0);
    assert_eq!(s.next_seq(), 5, "the acked file remembers where the sequence stood");
}
