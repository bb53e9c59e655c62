//! The history's SQLite file: one table of events, written in batches (one transaction
//! each) and kept within its age and size by deleting the oldest events and giving their
//! pages back to the file system (incremental vacuum), so the file itself stays small.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::Row;

/// How long a statement waits for the other side (a reader, the writer) to let go.
const BUSY: Duration = Duration::from_secs(2);

/// Share of `max_bytes` the events may fill after pruning: room for the next batch.
const LOW_WATER: f64 = 0.85;

/// Why the history could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite refused (a full or read-only disk, a damaged file, ...).
    #[error("history {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

impl HistoryError {
    /// Whether another connection held the file for longer than [`BUSY`]: the file is
    /// fine and the same statement succeeds once the other side lets go.
    pub fn is_busy(&self) -> bool {
        let HistoryError::Sqlite { source, .. } = self;
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

impl HistoryError {
    /// Whether the file is not an SQLite database or is damaged: opening it again never
    /// helps, so it is set aside and a new one started.
    pub fn is_damaged(&self) -> bool {
        let HistoryError::Sqlite { source, .. } = self;
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        )
    }
}

/// Set-aside files kept at most: the oldest go, so a card that keeps corrupting pages
/// cannot fill the disk with them (`history.max_mb` bounds the live file only).
pub const KEEP_ASIDE: usize = 2;

/// Moves a damaged file (and its journal) out of the way, to `<file>.corrupt-<unix ms>`
/// where a person can still look at it, and deletes the oldest set-aside files beyond
/// [`KEEP_ASIDE`]; the name it went to.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    // A later name than any there (two set-asides in one millisecond must not collide).
    let taken = asides(path).last().map_or(0, |(ms, _)| ms + 1);
    let aside = with_suffix(path, &format!(".corrupt-{}", ms.max(taken)));
    std::fs::rename(path, &aside)?;
    let journal_aside = with_suffix(&aside, "-journal");
    match std::fs::rename(with_suffix(path, "-journal"), &journal_aside) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let all = asides(path);
    for (_, old) in all.iter().take(all.len().saturating_sub(KEEP_ASIDE)) {
        // A file that will not go is left; the next set-aside tries again.
        let _ = std::fs::remove_file(old);
        let _ = std::fs::remove_file(with_suffix(old, "-journal"));
    }
    Ok(aside)
}

/// The files `path` was set aside to, oldest first.
fn asides(path: &Path) -> Vec<(u128, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.corrupt-");
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(u128, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let ms = e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok()?;
            Some((ms, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes `<file>.lock` (an exclusive `flock`, held while the returned file is open), so a
/// second clefd on the same `state_dir` cannot overwrite this one's events (both number
/// from the same `seq`). `None` when another process holds it.
pub fn lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(PathBuf::from(name))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) }
}

/// The writer's connection to the file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    retain_ms: i64,
    max_bytes: u64,
}

const TABLE: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    emotion TEXT NOT NULL,
    changed INTEGER,
    track_uid TEXT NOT NULL,
    payload TEXT NOT NULL,
    recv_ms INTEGER NOT NULL
);
";

/// A file from before `recv_ms`: its events count as received when they were captured.
/// One transaction, so a crash between the two never leaves `recv_ms = 0` (which the next
/// prune would read as "older than anything" and delete).
const ADD_RECV: &str = "
BEGIN IMMEDIATE;
ALTER TABLE events ADD COLUMN recv_ms INTEGER NOT NULL DEFAULT 0;
UPDATE events SET recv_ms = ts_ms;
COMMIT;
";

const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS events_camera_ts ON events (camera, ts_ms);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
CREATE INDEX IF NOT EXISTS events_camera_seq ON events (camera, seq);
CREATE INDEX IF NOT EXISTS events_recv ON events (recv_ms);
";

impl Store {
    /// Opens (or creates) the file at `path`, keeping events `retain` long and the file
    /// under `max_bytes`.
    pub fn open(path: &Path, retain: Duration, max_bytes: u64) -> Result<Store, HistoryError> {
        let err = |source| HistoryError::Sqlite { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY).map_err(err)?;
        // Set before the first table exists, so freed pages can be handed back later.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(TABLE).map_err(err)?;
        let has_recv: i64 = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'recv_ms'", [], |r| r.get(0))
            .map_err(err)?;
        if has_recv == 0 {
            conn.execute_batch(ADD_RECV).map_err(err)?;
        }
        conn.execute_batch(INDEXES).map_err(err)?;
        // A file made without it (by hand, by an older SQLite tool) never gives pages back:
        // rewrite it once with incremental vacuum on.
        let vacuum: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0)).map_err(err)?;
        if vacuum != 2 {
            tracing::info!(path = %path.display(), "turning the history file's incremental vacuum on (once)");
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM").map_err(err)?;
        }
        let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        Ok(Store { conn, path: path.to_path_buf(), retain_ms, max_bytes })
    }

    /// A read-only connection for queries (the page, the API), which never blocks the
    /// writer for longer than one query.
    pub fn reader(path: &Path) -> Result<Connection, HistoryError> {
        let err = |source| HistoryError::Sqlite { path: path.to_path_buf(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(BUSY).map_err(err)?;
        Ok(conn)
    }

    fn err(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Sqlite { path: self.path.clone(), source }
    }

    /// Writes `rows` in one transaction (an event seen again replaces the old one).
    pub fn insert(&mut self, rows: &[Row]) -> Result<(), HistoryError> {
        let tx = self.conn.transaction().map_err(|source| HistoryError::Sqlite { path: self.path.clone(), source })?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO events (seq, camera, ts_ms, kind, emotion, changed, track_uid, payload, recv_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(|e| HistoryError::Sqlite { path: self.path.clone(), source: e })?;
            for r in rows {
                let seq = i64::try_from(r.seq).unwrap_or(i64::MAX);
                insert
                    .execute(params![
                        seq,
                        r.camera,
                        r.ts_ms,
                        r.kind,
                        r.emotion,
                        r.changed,
                        r.track_uid,
                        r.payload,
                        r.recv_ms
                    ])
                    .map_err(|e| HistoryError::Sqlite { path: self.path.clone(), source: e })?;
            }
        }
        tx.commit().map_err(|source| HistoryError::Sqlite { path: self.path.clone(), source })
    }

    /// Deletes what was received longer than the retention before `now_ms` (host time, not
    /// the camera's), then the oldest events until
    /// `incoming` more bytes fit under the size limit; how many events went.
    pub fn prune(&mut self, now_ms: i64, incoming: u64) -> Result<u64, HistoryError> {
        let cutoff = now_ms.saturating_sub(self.retain_ms);
        let mut deleted =
            self.conn.execute("DELETE FROM events WHERE recv_ms < ?1", [cutoff]).map_err(|e| self.err(e))? as u64;
        // Rows take up to twice their bytes in pages (page slack, the indexes).
        let budget = ((self.max_bytes as f64 * LOW_WATER) as u64).saturating_sub(2 * incoming);
        // Bounded: each round deletes a tenth of what is left (at least 64 events).
        for _ in 0..64 {
            if self.used_bytes()? <= budget {
                break;
            }
            let rows: i64 =
                self.conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).map_err(|e| self.err(e))?;
            if rows == 0 {
                break;
            }
            let n = (rows / 10).max(64);
            deleted += self
                .conn
                .execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1)", [n])
                .map_err(|e| self.err(e))? as u64;
        }
        if deleted > 0 {
            // Each step of the pragma gives one page back: step it to the end.
            let mut vacuum = self.conn.prepare_cached("PRAGMA incremental_vacuum").map_err(|e| self.err(e))?;
            let mut pages = vacuum.query([]).map_err(|e| self.err(e))?;
            while pages.next().map_err(|e| self.err(e))?.is_some() {}
        }
        Ok(deleted)
    }

    /// Bytes the events fill (pages in use).
    fn used_bytes(&self) -> Result<u64, HistoryError> {
        let pragma = |name: &str| -> Result<u64, HistoryError> {
            self.conn
                .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
                .map(|v| v.max(0) as u64)
                .map_err(|e| self.err(e))
        };
        Ok(pragma("page_count")?.saturating_sub(pragma("freelist_count")?) * pragma("page_size")?)
    }

    /// The file's size in bytes, as the file system sees it.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, ts_ms: i64, payload_len: usize) -> Row {
        Row {
            seq,
            camera: "door".into(),
            ts_ms,
            recv_ms: ts_ms,
            kind: "update",
            emotion: "Happy".into(),
            changed: Some(seq % 3 == 0),
            track_uid: format!("r-door-{}", seq / 10),
            payload: format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(payload_len)),
        }
    }

    fn seqs(path: &Path) -> Vec<i64> {
        let conn = Store::reader(path).unwrap();
        let mut q = conn.prepare("SELECT seq FROM events ORDER BY seq").unwrap();
        q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn events_older_than_the_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let mut store = Store::open(&path, Duration::from_secs(3600), 64 << 20).unwrap();
        let now = 10_000_000_000;
        let rows: Vec<Row> = (0..10).map(|i| row(i, now - 7_200_000 + i as i64 * 800_000, 100)).collect();
        store.insert(&rows).unwrap();
        // ts = now-2h + i*13.3 min: i = 0..=4 are older than an hour.
        assert_eq!(store.prune(now, 0).unwrap(), 5);
        assert_eq!(seqs(&path), vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn age_is_reckoned_by_this_host_s_clock_not_the_camera_s() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let mut store = Store::open(&path, Duration::from_secs(3600), 64 << 20).unwrap();
        let now = 10_000_000_000;
        // A camera a day ahead, received two hours ago; one a day behind, received now.
        let ahead = Row { recv_ms: now - 7_200_000, ..row(1, now + 86_400_000, 100) };
        let behind = Row { recv_ms: now, ..row(2, now - 86_400_000, 100) };
        store.insert(&[ahead, behind]).unwrap();
        assert_eq!(store.prune(now, 0).unwrap(), 1);
        assert_eq!(seqs(&path), vec![2]);
    }

    #[test]
    fn a_file_without_incremental_vacuum_gets_it_and_shrinks_after_a_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let plain = Connection::open(&path).unwrap();
        plain.execute_batch("PRAGMA auto_vacuum = NONE; CREATE TABLE t (x); DROP TABLE t;").unwrap();
        drop(plain);
        let mut store = Store::open(&path, Duration::from_secs(3600), 64 << 20).unwrap();
        let mode: i64 = Store::reader(&path).unwrap().pragma_query_value(None, "auto_vacuum", |r| r.get(0)).unwrap();
        assert_eq!(mode, 2, "incremental");
        let now = 10_000_000_000;
        let rows: Vec<Row> = (0..500).map(|i| row(i, now - 7_200_000, 1000)).collect();
        store.insert(&rows).unwrap();
        let full = store.file_bytes();
        assert_eq!(store.prune(now, 0).unwrap(), 500);
        let after = store.file_bytes();
        assert!(after * 4 < full, "the file went from {full} to {after} bytes");
    }

    #[test]
    fn a_file_from_before_recv_ms_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, camera TEXT NOT NULL, ts_ms INTEGER NOT NULL,
               kind TEXT NOT NULL, emotion TEXT NOT NULL, changed INTEGER, track_uid TEXT NOT NULL,
               payload TEXT NOT NULL);
             INSERT INTO events VALUES (1, 'door', 5000, 'new', 'Happy', NULL, 'r-door-1', '{}');",
        )
        .unwrap();
        drop(old);
        let mut store = Store::open(&path, Duration::from_millis(1000), 64 << 20).unwrap();
        assert_eq!(store.prune(5_500, 0).unwrap(), 0, "received when captured: still young");
        store.insert(&[row(2, 9_000, 10)]).unwrap();
        assert_eq!(store.prune(7_000, 0).unwrap(), 1);
        assert_eq!(seqs(&path), vec![2]);
    }

    #[test]
    fn the_file_stays_under_its_size_and_keeps_the_newest_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let max = 1 << 20;
        let mut store = Store::open(&path, Duration::from_secs(3600), max).unwrap();
        let now = 10_000_000_000;
        let mut largest = 0;
        for batch in 0..60u64 {
            let rows: Vec<Row> = (0..100).map(|i| row(batch * 100 + i, now, 1500)).collect();
            let incoming: usize = rows.iter().map(Row::size).sum();
            store.prune(now, incoming as u64).unwrap();
            store.insert(&rows).unwrap();
            largest = largest.max(store.file_bytes());
        }
        // 6000 events of ~1.6 kB (about 9.6 MB) went through a 1 MiB file.
        assert!(largest <= max, "the file grew to {largest} bytes, over its {max}");
        let kept = seqs(&path);
        assert_eq!(kept.last(), Some(&5999), "the newest event is kept");
        assert!(kept.len() > 200 && kept.len() < 700, "{} events kept", kept.len());
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "the oldest went first: the rest is contiguous");
    }

    /// However often the file is set aside, at most `KEEP_ASIDE` set-aside files stay
    /// (the newest, journals with them): the history's disk use stays bounded.
    #[test]
    fn only_the_newest_set_aside_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let mut went = Vec::new();
        for n in 0..5 {
            std::fs::write(&path, format!("damaged {n}")).unwrap();
            std::fs::write(with_suffix(&path, "-journal"), format!("journal {n}")).unwrap();
            went.push(set_aside(&path).unwrap());
        }
        assert!(!path.exists(), "the damaged file went");
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left.len(), 2 * KEEP_ASIDE, "{left:?}");
        for (n, aside) in went.iter().enumerate() {
            let kept = n >= went.len() - KEEP_ASIDE;
            assert_eq!(aside.exists(), kept, "set-aside {n} ({}) in {left:?}", aside.display());
            assert_eq!(with_suffix(aside, "-journal").exists(), kept, "its journal, in {left:?}");
            if kept {
                assert_eq!(std::fs::read_to_string(aside).unwrap(), format!("damaged {n}"));
            }
        }
    }
}
