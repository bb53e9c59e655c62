//! The history's writer: one thread that takes events from a bounded channel and writes
//! them in batches, so the publisher hands an event over without ever touching the disk.
//! A disk that refuses is logged once per trouble, counted, and tried again later; a file
//! found damaged is set aside and a new one started. The daemon never hears of it otherwise.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{HistoryError, Row, Store};
use crate::config::HistorySettings;
use crate::events::EmotionEvent;

/// Events waiting for the writer at most; more are dropped (and counted).
pub const CAPACITY: usize = 2048;
/// Most events written in one transaction.
const MAX_BATCH: usize = 512;
/// How long a batch waits to fill up after its first event.
const GATHER: Duration = Duration::from_millis(250);
/// How often the writer prunes by age when no event comes.
const IDLE_PRUNE: Duration = Duration::from_secs(60);
/// Tries of a batch while a reader holds the file (each waits up to the store's busy
/// timeout, 2 s): a busy file is not a broken one, and its connection stays open.
const BUSY_TRIES: u32 = 5;
/// How long a broken file is left alone before it is opened again.
const RETRY: Duration = Duration::from_secs(10);

/// What the history did, for `/metrics` and the page.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Events written.
    pub written: AtomicU64,
    /// Events dropped because the writer was behind (the channel was full).
    pub dropped: AtomicU64,
    /// Events lost because the disk refused them.
    pub failed: AtomicU64,
    /// Events deleted for age or size.
    pub pruned: AtomicU64,
    /// Damaged files moved aside (`<file>.corrupt-<ms>`) for a new one.
    pub set_aside: AtomicU64,
    /// The file's size after the last write, in bytes.
    pub bytes: AtomicU64,
    /// Why the history cannot be written now, if it cannot.
    pub problem: Mutex<Option<String>>,
}

/// The process's history: where events are handed over, and where they are kept.
pub struct History {
    to_writer: SyncSender<Msg>,
    /// What it did.
    pub stats: Arc<HistoryStats>,
    /// Its settings.
    pub settings: HistorySettings,
}

impl History {
    /// Starts the writer thread for `settings`; the file is opened there, off the caller's
    /// thread, and a file that cannot be opened is only logged.
    pub fn start(settings: HistorySettings) -> History {
        History::launch(settings, RETRY)
    }

    fn launch(settings: HistorySettings, aside_window: Duration) -> History {
        let (to_writer, rx) = mpsc::sync_channel(CAPACITY);
        let stats = Arc::new(HistoryStats::default());
        let writer = Writer {
            settings: settings.clone(),
            stats: stats.clone(),
            store: None,
            broken_at: None,
            lock: None,
            set_aside_at: std::cell::Cell::new(None),
            aside_window,
        };
        let spawned = std::thread::Builder::new().name("clefd-history".into()).spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the history writer: no history is kept");
        }
        History { to_writer, stats, settings }
    }

    /// Hands `event` (published as `payload`) to the writer; drops it when the writer is behind.
    pub fn record(&self, event: &EmotionEvent, payload: &[u8]) {
        self.record_row(Row::from_event(event, payload));
    }

    /// Hands a row over; drops it when the writer is behind.
    pub fn record_row(&self, row: Row) {
        match self.to_writer.try_send(Msg::Row(row)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("the history writer is behind: events are left out of the history (counted)");
                }
            }
        }
    }

    /// Waits until what was handed over before is written, for at most `wait` (at
    /// shutdown: a consumer catching up later finds the last events too). Blocks: call it
    /// off the runtime.
    pub fn flush(&self, wait: Duration) -> bool {
        let failed = self.stats.failed.load(Ordering::Relaxed);
        let (done, written) = mpsc::sync_channel(1);
        let deadline = Instant::now() + wait;
        let mut msg = Msg::Flush(done);
        // The channel may be full: retry until the writer takes the request.
        loop {
            match self.to_writer.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return false,
            }
        }
        // Answered, and nothing lost meanwhile (a refused batch is answered too).
        written.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
            && self.stats.failed.load(Ordering::Relaxed) == failed
    }

    /// The file queries read.
    pub fn path(&self) -> PathBuf {
        self.settings.path.clone()
    }
}

/// What the writer is handed.
enum Msg {
    /// An event to keep.
    Row(Row),
    /// Write what came before now, then say so.
    Flush(SyncSender<()>),
}

struct Writer {
    settings: HistorySettings,
    stats: Arc<HistoryStats>,
    store: Option<Store>,
    /// When the file last failed: it is opened again after [`RETRY`].
    broken_at: Option<Instant>,
    /// The sidecar lock, held while this process writes the file.
    lock: Option<std::fs::File>,
    /// When the file was last set aside: damage again within [`RETRY`] (a card that keeps
    /// corrupting pages) breaks the file instead of setting another aside.
    set_aside_at: std::cell::Cell<Option<Instant>>,
    /// That window ([`RETRY`]; longer in tests, so no test races the clock).
    aside_window: Duration,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        // Open at once, so the page tells the file's size before the first event.
        if let Some(store) = self.store() {
            let bytes = store.file_bytes();
            self.stats.bytes.store(bytes, Ordering::Relaxed);
        }
        // A batch never outgrows a sixth of the file, so pruning can make room for it.
        let cap = (self.settings.max_bytes / 6).max(1) as usize;
        loop {
            let (mut batch, mut bytes, mut flushed) = (Vec::new(), 0, None);
            match rx.recv_timeout(IDLE_PRUNE) {
                Ok(Msg::Row(row)) => {
                    bytes += row.size();
                    batch.push(row);
                }
                Ok(Msg::Flush(done)) => flushed = Some(done),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let until = Instant::now() + GATHER;
            while flushed.is_none() && !batch.is_empty() && batch.len() < MAX_BATCH && bytes < cap {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(Msg::Row(row)) => {
                        bytes += row.size();
                        batch.push(row);
                    }
                    Ok(Msg::Flush(done)) => flushed = Some(done),
                    Err(_) => break,
                }
            }
            self.write(&batch);
            if let Some(done) = flushed {
                let _ = done.try_send(());
            }
        }
    }

    /// Makes room for `batch` and writes it. Damage met on the way sets the file aside
    /// and the batch goes to a new one (as at open: a damaged file stays damaged, and
    /// opening it again does not find damage in its pages); any other failure drops the
    /// file until [`RETRY`].
    fn write(&mut self, batch: &[Row]) {
        let mut result = self.attempt(batch);
        if let Some(Err(e)) = &result
            && e.is_damaged()
        {
            self.store = None;
            if self.set_aside(e) {
                result = self.attempt(batch);
            }
        }
        let stats = self.stats.clone();
        match result {
            None => {
                stats.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Some(Ok(bytes)) => {
                stats.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.bytes.store(bytes, Ordering::Relaxed);
                if let Ok(mut problem) = stats.problem.lock()
                    && problem.take().is_some()
                {
                    tracing::info!("the history is written again");
                }
            }
            Some(Err(e)) if e.is_busy() => {
                // Still busy after every try: this batch is lost, the file stays open.
                stats.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.problem(e.to_string());
            }
            Some(Err(e)) => {
                stats.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.broken(e.to_string());
            }
        }
    }

    /// Prunes and writes `batch` on the open file, waiting out a reader that holds it;
    /// the file's size after, or `None` when no file is open.
    fn attempt(&mut self, batch: &[Row]) -> Option<Result<u64, HistoryError>> {
        let stats = self.stats.clone();
        let store = self.store()?;
        let incoming = batch.iter().map(|r| r.size() as u64).sum::<u64>();
        let mut result = Ok(());
        for _ in 0..BUSY_TRIES {
            result = store.prune(super::now_ms(), incoming).and_then(|pruned| {
                stats.pruned.fetch_add(pruned, Ordering::Relaxed);
                if batch.is_empty() { Ok(()) } else { store.insert(batch) }
            });
            if !result.as_ref().is_err_and(HistoryError::is_busy) {
                break;
            }
        }
        Some(result.map(|()| store.file_bytes()))
    }

    /// Moves the damaged file aside (the connection to it is closed) so a new one is
    /// started; logged and counted once per file. Whether it went: not when a file was
    /// set aside less than [`RETRY`] ago (the caller then breaks the file, and tries again
    /// after [`RETRY`]), so a failing card sets aside at most one file per [`RETRY`].
    fn set_aside(&self, damage: &HistoryError) -> bool {
        if self.set_aside_at.get().is_some_and(|t| t.elapsed() < self.aside_window) {
            return false;
        }
        match super::store::set_aside(&self.settings.path) {
            Ok(aside) => {
                self.set_aside_at.set(Some(Instant::now()));
                self.stats.set_aside.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %damage, kept = %aside.display(), "the history's file is damaged: set aside, a new one started");
                true
            }
            Err(io) => {
                tracing::warn!(error = %io, "cannot set the damaged history file aside");
                false
            }
        }
    }

    /// The open file, opening it when it is closed and not broken too recently.
    fn store(&mut self) -> Option<&mut Store> {
        if self.store.is_none() && self.broken_at.is_none_or(|t| t.elapsed() >= RETRY) {
            if self.lock.is_none() {
                let path = &self.settings.path;
                match super::store::lock(path) {
                    Ok(Some(lock)) => self.lock = Some(lock),
                    Ok(None) => {
                        let why = format!("another process keeps its history in {}: none is kept here", path.display());
                        self.broken(why);
                        return None;
                    }
                    Err(e) => {
                        self.broken(format!("cannot lock {}.lock: {e}", path.display()));
                        return None;
                    }
                }
            }
            let s = &self.settings;
            let opened = match Store::open(&s.path, s.retain, s.max_bytes) {
                Err(e) if e.is_damaged() && self.set_aside(&e) => Store::open(&s.path, s.retain, s.max_bytes),
                other => other,
            };
            match opened {
                Ok(store) => self.store = Some(store),
                Err(e) => self.broken(e.to_string()),
            }
        }
        self.store.as_mut()
    }

    /// Closes the file and says why, once per kind of trouble.
    fn broken(&mut self, reason: String) {
        self.store = None;
        self.broken_at = Some(Instant::now());
        self.problem(reason);
    }

    /// Says why the history cannot be written, once per kind of trouble.
    fn problem(&self, reason: String) {
        if let Ok(mut problem) = self.stats.problem.lock()
            && problem.as_deref() != Some(reason.as_str())
        {
            tracing::warn!(error = %reason, "the history cannot be written: events are left out of it (counted); analysis goes on");
            *problem = Some(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::EventType;

    fn settings(path: PathBuf, max_bytes: u64) -> HistorySettings {
        HistorySettings { path, retain: Duration::from_secs(3600), max_bytes }
    }

    /// Waits until `done` holds, for at most a minute (a loaded machine's disk is slow).
    fn wait(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_flood_is_dropped_and_counted_and_the_file_stays_under_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let max = 256 * 1024;
        let history = History::start(settings(path.clone(), max));
        let mut e = EmotionEvent::for_test("door", 1, EventType::Update, "Happy", 0.9);
        let payload = vec![b'x'; 1500];
        let n = 20_000u64;
        for seq in 1..=n {
            e.seq = seq;
            history.record(&e, &payload);
        }
        let s = history.stats.clone();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        wait("every event written or dropped", || load(&s.written) + load(&s.dropped) + load(&s.failed) == n);
        assert_eq!(load(&s.failed), 0);
        assert!(load(&s.dropped) > 0, "20000 events handed over at once must outrun a channel of {CAPACITY}");
        assert!(load(&s.pruned) > 0, "{} kB of events went through a {max}-byte file", n * 1500 / 1000);
        // Once it caught up, the next event is kept.
        let written = load(&s.written);
        e.seq = n + 1;
        history.record(&e, &payload);
        wait("the event after the flood written", || load(&s.written) == written + 1);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= max, "the file is {size} bytes, over its {max}");
        let conn = Store::reader(&path).unwrap();
        let newest: i64 = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(newest as u64, n + 1, "the newest event is kept");
    }

    #[test]
    fn a_flush_returns_once_what_came_before_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::start(settings(dir.path().join("h.sqlite"), 1 << 20));
        let mut e = EmotionEvent::for_test("door", 1, EventType::New, "Happy", 0.9);
        for seq in 1..=5 {
            e.seq = seq;
            history.record(&e, b"{}");
        }
        assert!(history.flush(Duration::from_secs(60)), "the writer answers");
        assert_eq!(history.stats.written.load(Ordering::Relaxed), 5, "all five written before the answer");
    }

    /// A writer on a new file in a folder of its own that wrote event 1 as `payload`:
    /// the folder, the file, the writer and the event (to number on).
    fn one_written(payload: &[u8]) -> (tempfile::TempDir, PathBuf, History, EmotionEvent) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let history = History::start(settings(path.clone(), 1 << 20));
        let mut e = EmotionEvent::for_test("door", 1, EventType::New, "Happy", 0.9);
        e.seq = 1;
        history.record(&e, payload);
        assert!(history.flush(Duration::from_secs(60)), "the writer answers");
        (dir, path, history, e)
    }

    /// The `seq`s the file at `path` holds, in order.
    fn kept(path: &std::path::Path) -> Vec<i64> {
        let conn = Store::reader(path).unwrap();
        let mut q = conn.prepare("SELECT seq FROM events ORDER BY seq").unwrap();
        q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_reader_holding_the_file_delays_a_batch_and_loses_nothing() {
        let (_dir, path, history, mut e) = one_written(b"{}");
        // A reader in a transaction keeps its shared lock: the writer cannot commit.
        let reader = Store::reader(&path).unwrap();
        reader.execute_batch("BEGIN; SELECT COUNT(*) FROM events;").unwrap();
        for seq in 2..=6 {
            e.seq = seq;
            history.record(&e, b"{}");
        }
        // Longer than one busy timeout (2 s): before the fix the batch was lost here.
        std::thread::sleep(Duration::from_secs(3));
        reader.execute_batch("COMMIT").unwrap();
        let s = history.stats.clone();
        wait("the held batch written", || s.written.load(Ordering::Relaxed) == 6);
        assert_eq!(s.failed.load(Ordering::Relaxed), 0, "a busy file loses nothing");
        assert!(s.problem.lock().unwrap().is_none());
    }

    #[test]
    fn a_second_writer_on_the_same_file_keeps_nothing_and_says_why() {
        let (_dir, path, _first, e) = one_written(b"{\"first\":1}");
        let second = History::start(settings(path.clone(), 1 << 20));
        second.record(&e, b"{\"second\":1}");
        assert!(!second.flush(Duration::from_secs(60)), "the second one wrote nothing");
        let problem = second.stats.problem.lock().unwrap().clone().unwrap_or_default();
        assert!(problem.contains("another process keeps its history"), "{problem}");
        let conn = Store::reader(&path).unwrap();
        let payload: String = conn.query_row("SELECT payload FROM events WHERE seq = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(payload, "{\"first\":1}", "the first one's event stays");
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let garbage = b"not a database at all ".repeat(400);
        std::fs::write(&path, &garbage).unwrap();
        let history = History::start(settings(path.clone(), 1 << 20));
        let mut e = EmotionEvent::for_test("door", 1, EventType::New, "Happy", 0.9);
        for seq in 1..=3 {
            e.seq = seq;
            history.record(&e, b"{}");
        }
        assert!(history.flush(Duration::from_secs(60)), "the writer answers");
        let s = &history.stats;
        assert_eq!((s.written.load(Ordering::Relaxed), s.failed.load(Ordering::Relaxed)), (3, 0));
        assert_eq!(s.set_aside.load(Ordering::Relaxed), 1);
        let aside = set_aside_files(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage, "kept as it was");
    }

    /// Under the running writer, every page of `path` but the first (the schema, which
    /// opening reads) turns to garbage; the change counter moves so its connection reads
    /// again. Opening it finds nothing wrong: only writing does.
    fn damage_under_the_writer(dir: &std::path::Path, path: &std::path::Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let page = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65_536,
            n => usize::from(n),
        };
        assert!(bytes.len() > 10 * page, "{} bytes: more than the schema's page", bytes.len());
        bytes[page..].fill(0xA5);
        let counter = u32::from_be_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]).wrapping_add(1);
        bytes[24..28].copy_from_slice(&counter.to_be_bytes());
        std::fs::write(path, &bytes).unwrap();
        let copy = dir.join("copy.sqlite");
        std::fs::write(&copy, &bytes).unwrap();
        assert!(Store::open(&copy, Duration::from_secs(3600), 1 << 20).is_ok(), "opening finds no damage");
    }

    /// Damage again soon after a set-aside (a card that keeps corrupting pages) sets no
    /// second file aside: the history stops for `RETRY` and says why, and the set-aside
    /// files stay one.
    #[test]
    fn damage_again_soon_after_a_set_aside_breaks_the_file_instead_of_setting_another_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        std::fs::write(&path, b"not a database at all ".repeat(400)).unwrap();
        // A window no test run outlasts: "soon" does not depend on the machine's speed.
        let history = History::launch(settings(path.clone(), 1 << 20), Duration::from_secs(3600));
        let mut e = EmotionEvent::for_test("door", 1, EventType::New, "Happy", 0.9);
        let payload = vec![b'x'; 1000];
        for seq in 1..=200 {
            e.seq = seq;
            history.record(&e, &payload);
        }
        assert!(history.flush(Duration::from_secs(60)), "the new file takes the events");
        assert_eq!(history.stats.set_aside.load(Ordering::Relaxed), 1, "the garbage file went aside");
        damage_under_the_writer(dir.path(), &path);
        for seq in 201..=203 {
            e.seq = seq;
            history.record(&e, b"{}");
        }
        assert!(!history.flush(Duration::from_secs(60)), "the events that met the damage are lost (counted)");
        let s = &history.stats;
        assert_eq!(s.set_aside.load(Ordering::Relaxed), 1, "no second set-aside within the window");
        assert_eq!(s.failed.load(Ordering::Relaxed), 3);
        let problem = s.problem.lock().unwrap().clone().unwrap_or_default();
        assert!(!problem.is_empty(), "the history says why it stopped");
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().contains("h.sqlite.corrupt-"))
            .count();
        assert_eq!(aside, 1, "one file set aside on disk");
        assert!(path.exists(), "the damaged file stays where it is");
    }

    #[test]
    fn damage_found_while_writing_sets_the_file_aside_and_a_new_one_takes_the_events() {
        let (dir, path, history, mut e) = one_written(b"{}");
        let payload = vec![b'x'; 1000];
        for seq in 2..=200 {
            e.seq = seq;
            history.record(&e, &payload);
        }
        assert!(history.flush(Duration::from_secs(60)), "the writer answers");
        damage_under_the_writer(dir.path(), &path);
        for seq in 201..=203 {
            e.seq = seq;
            history.record(&e, b"{}");
        }
        assert!(history.flush(Duration::from_secs(60)), "the events that met the damage are written after all");
        let aside = set_aside_files(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(kept(&path), [201, 202, 203], "a new file took them");
        e.seq = 204;
        history.record(&e, b"{}");
        assert!(history.flush(Duration::from_secs(60)), "the writer answers");
        assert_eq!(kept(&path), [201, 202, 203, 204], "and the ones after");
        let s = &history.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((load(&s.written), load(&s.failed), load(&s.set_aside)), (204, 0, 1), "set aside once");
        assert!(s.problem.lock().unwrap().is_none());
    }

    #[test]
    fn a_file_that_cannot_be_opened_loses_the_history_only() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::start(settings(dir.path().join("no/such/folder/h.sqlite"), 1 << 20));
        let e = EmotionEvent::for_test("door", 1, EventType::New, "Happy", 0.9);
        for _ in 0..10 {
            history.record(&e, b"{}");
        }
        let s = history.stats.clone();
        wait("the events counted as lost", || s.failed.load(Ordering::Relaxed) == 10);
        history.record(&e, b"{}");
        assert!(!history.flush(Duration::from_secs(60)), "a flush that lost its events says so");
        let problem = s.problem.lock().unwrap().clone().unwrap_or_default();
        assert!(problem.contains("no/such/folder/h.sqlite"), "{problem}");
        assert_eq!(s.written.load(Ordering::Relaxed), 0);
    }

    /// The files a set-aside left in `dir`.
    fn set_aside_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        (std::fs::read_dir(dir).unwrap())
            .map(|f| f.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("h.sqlite.corrupt-"))
            .collect()
    }
}
