//! The spool against random histories: appends, fsyncs, sends, acknowledgements, clean
//! restarts, crashes that keep any prefix of what was not fsync'd, and damage to the files
//! between runs (bit flips, truncation, zeroed ranges, a deleted segment).
//!
//! After every restart: every durable, unacknowledged record whose bytes are intact is
//! read back unchanged (duplicates of acknowledged ones are allowed), every record that is
//! missing was damaged and is counted lost, and no more is counted than was damaged.
//! `SPOOL_FUZZ_CASES` sets the number of histories (default 1500).

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Damage {
    Flip { file: u16, at: u32, bit: u8 },
    Truncate { file: u16, at: u32 },
    Zero { file: u16, at: u32, len: u16 },
    Delete { file: u16 },
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Sync,
    Send(u8),
    Ack(u16),
    Restart,
    Crash { cut: u32, damage: Vec<Damage> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<u16>(), any::<u32>(), 0u8..8).prop_map(|(file, at, bit)| Damage::Flip { file, at, bit }),
        1 => (any::<u16>(), any::<u32>()).prop_map(|(file, at)| Damage::Truncate { file, at }),
        2 => (any::<u16>(), any::<u32>(), 1u16..600).prop_map(|(file, at, len)| Damage::Zero { file, at, len }),
        1 => any::<u16>().prop_map(|file| Damage::Delete { file }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40).prop_map(Op::Append),
        3 => Just(Op::Sync),
        3 => (1u8..64).prop_map(Op::Send),
        4 => any::<u16>().prop_map(Op::Ack),
        1 => Just(Op::Restart),
        2 => (any::<u32>(), proptest::collection::vec(damage(), 0..3)).prop_map(|(cut, damage)| Op::Crash { cut, damage }),
    ]
}

fn rec(seq: u64) -> Record {
    let n = (seq.wrapping_mul(2_654_435_761) % 300) as usize;
    let payload = format!("{{\"seq\":{seq},\"x\":\"{}\"}}", "y".repeat(n)).into_bytes();
    Record { seq, topic: format!("clefd/dev/cam{}/emotion", seq % 3), payload }
}

/// Where each whole record of a (clean) segment file lies: (seq, start, end).
fn layout(path: &Path, first_seq: u64) -> Vec<(u64, u64, u64)> {
    let all = Window { offset: 0, prev_seq: None, from: 0, until: u64::MAX, limit: usize::MAX };
    let Ok(read) = format::read(path, first_seq, all) else { return Vec::new() };
    read.records.iter().zip(&read.starts).map(|(r, &at)| (r.seq, at, at + record_len(r))).collect()
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    v.sort();
    v
}

/// Damages the files; returns the numbers of the records whose bytes changed.
fn apply(dir: &Path, damage: &[Damage]) -> BTreeSet<u64> {
    let files = segment_files(dir);
    /// Each file's records (seq, start, end) and bytes before the damage.
    type Before = Vec<(Vec<(u64, u64, u64)>, Vec<u8>)>;
    let before: Before =
        files.iter().map(|(first, path)| (layout(path, *first), std::fs::read(path).unwrap())).collect();
    for d in damage {
        let present: Vec<&(u64, PathBuf)> = files.iter().filter(|(_, p)| p.exists()).collect();
        if present.is_empty() {
            break;
        }
        let (Damage::Flip { file, .. }
        | Damage::Truncate { file, .. }
        | Damage::Zero { file, .. }
        | Damage::Delete { file }) = d;
        let path = &present[usize::from(*file) % present.len()].1;
        let mut bytes = std::fs::read(path).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let n = bytes.len();
        match d {
            Damage::Flip { at, bit, .. } => bytes[*at as usize % n] ^= 1 << bit,
            Damage::Truncate { at, .. } => bytes.truncate(*at as usize % n),
            Damage::Zero { at, len, .. } => {
                let from = *at as usize % n;
                bytes[from..(from + usize::from(*len)).min(n)].fill(0);
            }
            Damage::Delete { .. } => {
                std::fs::remove_file(path).unwrap();
                continue;
            }
        }
        std::fs::write(path, bytes).unwrap();
    }
    let mut hit = BTreeSet::new();
    for ((_, path), (records, old)) in files.iter().zip(before) {
        let now = std::fs::read(path).unwrap_or_default();
        for (seq, start, end) in records {
            let (s, e) = (start as usize, end as usize);
            if now.len() < e || now[s..e] != old[s..e] {
                hit.insert(seq);
            }
        }
    }
    hit
}

struct Model {
    next: u64,
    unsynced: Vec<u64>,
    durable: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    inflight: Vec<u64>,
    next_send: u64,
    /// Numbered, never durable, gone in a crash.
    crash_lost: BTreeSet<u64>,
}

const MAX_BYTES: u64 = 4 << 20;

fn reopen(dir: &Path, m: &mut Model, damaged: &BTreeSet<u64>) -> Result<Spool, TestCaseError> {
    let mut s = Spool::open(dir, MAX_BYTES).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = s.read_pending(0, usize::MAX).unwrap();
    for r in &got {
        prop_assert_eq!(r, &rec(r.seq), "nothing garbled is read");
    }
    let read: BTreeSet<u64> = got.iter().map(|r| r.seq).collect();
    prop_assert_eq!(read.len(), got.len(), "each record once per read");
    let missing: Vec<u64> = m.durable.iter().filter(|s| !m.acked.contains(s) && !read.contains(s)).copied().collect();
    let silent: Vec<u64> = missing.iter().filter(|s| !damaged.contains(s)).copied().collect();
    prop_assert!(silent.is_empty(), "intact durable records not read: {:?}", silent);
    prop_assert!(s.lost() >= missing.len() as u64, "lost {} < missing {:?}", s.lost(), missing);
    // Numbers a crash took before they were durable are a gap in seq too: counting them
    // when damage spans them is allowed, counting more is not.
    let bound = damaged.len() + m.crash_lost.len();
    prop_assert!(
        s.lost() <= bound as u64,
        "lost {} > damaged {} + lost in crashes {}",
        s.lost(),
        damaged.len(),
        m.crash_lost.len()
    );
    prop_assert_eq!(s.pending(), read.len() as u64, "what is counted is what is read");
    prop_assert!(s.next_seq() <= m.next, "the spool never runs ahead of what was numbered");
    m.crash_lost.extend(m.unsynced.iter().filter(|s| !read.contains(s)));
    m.durable = read;
    m.unsynced.clear();
    m.acked.clear();
    m.inflight.clear();
    m.next_send = 0;
    Ok(s)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() { tempfile::tempdir_in(base) } else { tempfile::tempdir() }.unwrap();
    let mut s = Spool::open(dir.path(), MAX_BYTES).unwrap();
    let mut m = Model {
        next: 0,
        unsynced: Vec::new(),
        durable: BTreeSet::new(),
        acked: BTreeSet::new(),
        inflight: Vec::new(),
        next_send: 0,
        crash_lost: BTreeSet::new(),
    };
    for op in ops {
        match op {
            Op::Append(n) => {
                for _ in 0..n {
                    s.append(&rec(m.next)).unwrap();
                    m.unsynced.push(m.next);
                    m.next += 1;
                }
            }
            Op::Sync => {
                s.sync().unwrap();
                m.durable.extend(m.unsynced.drain(..));
            }
            Op::Send(n) => {
                for r in s.read_pending(m.next_send, usize::from(n)).unwrap() {
                    prop_assert!(m.durable.contains(&r.seq), "{} sent before it was durable", r.seq);
                    prop_assert_eq!(&r, &rec(r.seq));
                    s.mark_sent(r.seq);
                    m.inflight.push(r.seq);
                    m.next_send = r.seq + 1;
                }
            }
            Op::Ack(i) => {
                if !m.inflight.is_empty() {
                    let seq = m.inflight.remove(usize::from(i) % m.inflight.len());
                    s.ack(seq).unwrap();
                    m.acked.insert(seq);
                }
            }
            Op::Restart => {
                drop(s);
                m.durable.extend(m.unsynced.drain(..));
                s = reopen(dir.path(), &mut m, &BTreeSet::new())?;
            }
            Op::Crash { cut, damage } => {
                // What was not fsync'd survives as any prefix.
                let cuts: Vec<(PathBuf, u64)> = s
                    .segments
                    .iter()
                    .filter(|g| g.bytes > g.durable_bytes)
                    .map(|g| (g.path.clone(), g.durable_bytes + u64::from(cut) % (g.bytes - g.durable_bytes + 1)))
                    .collect();
                s.crashed = true;
                drop(s);
                for (path, len) in cuts {
                    OpenOptions::new().write(true).open(&path).unwrap().set_len(len).unwrap();
                }
                let hit = apply(dir.path(), &damage);
                s = reopen(dir.path(), &mut m, &hit)?;
            }
        }
    }
    drop(s);
    m.durable.extend(m.unsynced.drain(..));
    reopen(dir.path(), &mut m, &BTreeSet::new()).map(drop)
}

/// Histories per seed (`SPOOL_FUZZ_CASES` sets it).
fn cases() -> u32 {
    std::env::var("SPOOL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES)
}

/// Histories per seed by default: `SEEDS.len() * CASES` histories in `make test`.
const CASES: u32 = 500;

/// The seeds every run of `make test` replays, so a red CI can be replayed: 1, and 2, 6, 7
/// and 8, which found the damaged-header defect (`a_flipped_magic_is_not_a_legacy_segment`;
/// seed 6 also `garbage_is_not_counted_on_top_of_the_numbers_it_took`). Seeds 1 to 20 pass
/// with 1,500 histories each (`SPOOL_FUZZ_SEED=1-20 SPOOL_FUZZ_CASES=1500`, about 7 min).
const SEEDS: [u64; 5] = [1, 2, 6, 7, 8];

/// The seeds to run: `SPOOL_FUZZ_SEED=N` or `=A-B` (a long run), else [`SEEDS`].
fn seeds() -> Vec<u64> {
    let Ok(text) = std::env::var("SPOOL_FUZZ_SEED") else { return SEEDS.to_vec() };
    let bound = |t: &str| t.trim().parse::<u64>().ok();
    match text.split_once('-') {
        Some((a, b)) => match (bound(a), bound(b)) {
            (Some(a), Some(b)) => (a..=b).collect(),
            _ => panic!("SPOOL_FUZZ_SEED={text}: not N or A-B"),
        },
        None => vec![bound(&text).unwrap_or_else(|| panic!("SPOOL_FUZZ_SEED={text}: not N or A-B"))],
    }
}

#[test]
fn every_intact_record_is_delivered_and_every_damaged_one_counted() {
    let histories = proptest::collection::vec(op(), 1..60);
    for seed in seeds() {
        let config = ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
            ..ProptestConfig::default()
        };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        if let Err(e) = runner.run(&histories, run) {
            panic!("SPOOL_FUZZ_SEED={seed}: {e}");
        }
    }
}

/// Histories the seeds above once failed on, shrunk, replayed as they are.
#[test]
fn a_flipped_magic_is_not_a_legacy_segment() {
    // Seed 2's: the flip turned `CLEFSPL3` into `CLEFSPL2`; records 0.. were read as
    // format 2, found garbled and counted lost although their bytes were intact.
    let flip = |at| Op::Crash { cut: 0, damage: vec![Damage::Flip { file: 0, at, bit: 0 }] };
    run(vec![Op::Append(29), Op::Append(28), Op::Sync, flip(7)]).unwrap();
    let truncate = Op::Crash { cut: 0, damage: vec![Damage::Truncate { file: 0, at: 5000 }] };
    run(vec![Op::Append(29), Op::Append(28), Op::Sync, truncate, flip(7)]).unwrap();
}

/// Seed 6's: the newest segment cut to 205 bytes and its header zeroed. No format-3
/// record checks out, so it was read as format 1, which took the garbage for one record
/// and counted it lost on top of the 17 numbers counted by the durable watermark.
#[test]
fn garbage_is_not_counted_on_top_of_the_numbers_it_took() {
    let damage =
        vec![Damage::Truncate { file: 0, at: 1_251_648_547 }, Damage::Zero { file: 0, at: 1_375_986_651, len: 28 }];
    run(vec![Op::Append(17), Op::Sync, Op::Crash { cut: 0, damage }]).unwrap();
}
