//! What the page and the API read from the history: events in `seq` order, a page at a
//! time, and per-time-bucket summaries aggregated in SQL.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::HistoryError;

/// Most events one API page returns.
pub const MAX_LIMIT: usize = 1000;

/// Which events to return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Only this camera's.
    pub camera: Option<String>,
    /// Captured at or after this (unix ms).
    pub since_ms: Option<i64>,
    /// Captured before this (unix ms).
    pub until_ms: Option<i64>,
    /// Only events numbered after this (the cursor of the previous page).
    pub after_seq: Option<u64>,
    /// Most events returned (1 to [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One page of events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// `(seq, JSON as published)`, by `seq`.
    pub events: Vec<(u64, String)>,
    /// Whether more events match after the last one.
    pub more: bool,
    /// The oldest `seq` the history still holds (of the camera asked for, if one was), if
    /// any: a consumer whose cursor is older knows that the events between were pruned.
    /// Per camera, because a consumer of one camera pages by its `seq`s alone: another
    /// camera's older events say nothing about what it missed.
    pub oldest: Option<u64>,
}

/// The SQL for `q`'s page of `limit + 1` rows and its parameters. Only the filters given
/// appear in the WHERE clause, so SQLite can pick the index they need (a camera's events
/// by `seq`) instead of reading the whole table past `(? IS NULL OR ...)`.
fn select(q: &EventQuery, limit: usize) -> (String, Vec<Value>) {
    let after = q.after_seq.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
    let mut sql = String::from("SELECT seq, payload FROM events WHERE seq > ?1");
    let mut values = vec![Value::Integer(after)];
    let mut and = |clause: &str, value: Value| {
        values.push(value);
        sql += &format!(" AND {clause} ?{}", values.len());
    };
    if let Some(c) = &q.camera {
        and("camera =", Value::Text(c.clone()));
    }
    if let Some(t) = q.since_ms {
        and("ts_ms >=", Value::Integer(t));
    }
    if let Some(t) = q.until_ms {
        and("ts_ms <", Value::Integer(t));
    }
    values.push(Value::Integer((limit + 1) as i64));
    sql += &format!(" ORDER BY seq LIMIT ?{}", values.len());
    (sql, values)
}

/// The events `q` asks for.
pub fn events(path: &Path, q: &EventQuery) -> Result<EventPage, HistoryError> {
    let err = |source| HistoryError::Sqlite { path: path.to_path_buf(), source };
    let mut conn = super::Store::reader(path)?;
    // One read transaction: the page and `oldest` see the same file (no prune between).
    let conn = conn.transaction().map_err(err)?;
    let limit = q.limit.clamp(1, MAX_LIMIT);
    let (sql, values) = select(q, limit);
    let mut stmt = conn.prepare(&sql).map_err(err)?;
    let rows = stmt
        .query_map(params_from_iter(values), |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)))
        .map_err(err)?;
    let mut events = rows.collect::<Result<Vec<_>, _>>().map_err(err)?;
    let more = events.len() > limit;
    events.truncate(limit);
    let oldest: Option<i64> = match &q.camera {
        Some(c) => conn.query_row("SELECT MIN(seq) FROM events WHERE camera = ?1", [c], |r| r.get(0)),
        None => conn.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0)),
    }
    .map_err(err)?;
    Ok(EventPage { events, more, oldest: oldest.map(|s| s as u64) })
}

/// What one stretch of time looked like on one camera.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Its start (unix ms).
    pub start_ms: i64,
    /// Events in it.
    pub events: u64,
    /// The emotion most of its events decided, and how many did.
    pub dominant: Option<(String, u64)>,
    /// Events whose decision was made with debiasing on.
    pub debiased: u64,
    /// Of those, the ones where debiasing changed the factual decision.
    pub changed: u64,
    /// Different faces (tracks) seen in it.
    pub faces: u64,
}

/// `camera`'s events from `from_ms` to `to_ms`, in `n` equal buckets.
pub fn buckets(path: &Path, camera: &str, from_ms: i64, to_ms: i64, n: usize) -> Result<Vec<Bucket>, HistoryError> {
    let err = |source| HistoryError::Sqlite { path: path.to_path_buf(), source };
    let n = n.max(1);
    let width = ((to_ms - from_ms) / n as i64).max(1);
    let mut out: Vec<Bucket> =
        (0..n).map(|i| Bucket { start_ms: from_ms + i as i64 * width, ..Bucket::default() }).collect();
    let conn: Connection = super::Store::reader(path)?;
    let to_ms = from_ms + width * n as i64;
    let mut by_emotion = conn
        .prepare_cached(
            "SELECT (ts_ms - ?2) / ?4 AS b, emotion, COUNT(*), COUNT(changed), COALESCE(SUM(changed), 0)
             FROM events WHERE camera = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 GROUP BY b, emotion",
        )
        .map_err(err)?;
    let rows = by_emotion
        .query_map(params![camera, from_ms, to_ms, width], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(err)?;
    let mut emotions: BTreeMap<usize, Vec<(String, u64)>> = BTreeMap::new();
    for row in rows {
        let (b, emotion, count, debiased, changed) = row.map_err(err)?;
        let Some(bucket) = usize::try_from(b).ok().and_then(|b| out.get_mut(b)) else { continue };
        bucket.events += count as u64;
        bucket.debiased += debiased as u64;
        bucket.changed += changed as u64;
        emotions.entry(bucket_index(b)).or_default().push((emotion, count as u64));
    }
    for (b, mut counts) in emotions {
        // Most events first; a tie goes to the label that sorts first, so a page is stable.
        counts.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        out[b].dominant = counts.into_iter().next();
    }
    let mut faces = conn
        .prepare_cached(
            "SELECT (ts_ms - ?2) / ?4 AS b, COUNT(DISTINCT track_uid)
             FROM events WHERE camera = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 GROUP BY b",
        )
        .map_err(err)?;
    let rows = faces
        .query_map(params![camera, from_ms, to_ms, width], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(err)?;
    for row in rows {
        let (b, n) = row.map_err(err)?;
        if let Some(bucket) = out.get_mut(bucket_index(b)) {
            bucket.faces = n as u64;
        }
    }
    Ok(out)
}

fn bucket_index(b: i64) -> usize {
    usize::try_from(b).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Row, Store};
    use super::*;

    fn row(seq: u64, camera: &str, ts_ms: i64, emotion: &str, changed: Option<bool>, track: u64) -> Row {
        Row {
            seq,
            camera: camera.into(),
            ts_ms,
            recv_ms: ts_ms,
            kind: "update",
            emotion: emotion.into(),
            changed,
            track_uid: format!("r-{camera}-{track}"),
            payload: format!("{{\"seq\":{seq}}}"),
        }
    }

    fn filled() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let mut store = Store::open(&path, Duration::from_secs(86_400), 64 << 20).unwrap();
        let rows = vec![
            row(1, "door", 1_000, "Happy", Some(false), 1),
            row(2, "door", 1_500, "Happy", Some(true), 1),
            row(3, "hall", 1_600, "Sad", None, 7),
            row(4, "door", 1_900, "Sad", Some(true), 2),
            row(5, "door", 2_100, "Sad", Some(false), 2),
            row(6, "door", 2_900, "Angry", Some(false), 3),
        ];
        store.insert(&rows).unwrap();
        (dir, path)
    }

    #[test]
    fn pages_follow_the_cursor_and_filters_apply() {
        let (_dir, path) = filled();
        let q = EventQuery { camera: Some("door".into()), limit: 2, ..EventQuery::default() };
        let first = events(&path, &q).unwrap();
        assert_eq!(first.events.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
        assert!(first.more);
        assert_eq!(first.oldest, Some(1));
        let second = events(&path, &EventQuery { after_seq: Some(2), ..q.clone() }).unwrap();
        assert_eq!(second.events.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5]);
        let third = events(&path, &EventQuery { after_seq: Some(5), ..q.clone() }).unwrap();
        assert_eq!((third.events.len(), third.more), (1, false));
        let window = EventQuery { since_ms: Some(1_500), until_ms: Some(2_100), limit: 10, ..EventQuery::default() };
        assert_eq!(events(&path, &window).unwrap().events.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(events(&path, &window).unwrap().events[0].1, "{\"seq\":2}");
    }

    #[test]
    fn a_camera_filter_reads_that_camera_s_index() {
        let (_dir, path) = filled();
        let conn = Store::reader(&path).unwrap();
        let plan = |q: &EventQuery| -> String {
            let (sql, values) = select(q, 10);
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let door = EventQuery { camera: Some("nosuch".into()), since_ms: Some(1), ..EventQuery::default() };
        let p = plan(&door);
        assert!(p.contains("USING INDEX events_camera_seq (camera=? AND seq>?)"), "{p}");
        let all = plan(&EventQuery { after_seq: Some(3), ..EventQuery::default() });
        assert!(all.contains("USING INTEGER PRIMARY KEY"), "{all}");
        assert!(events(&path, &door).unwrap().events.is_empty());
    }

    #[test]
    fn the_oldest_seq_is_the_camera_s_when_one_is_asked_for() {
        let (_dir, path) = filled();
        let oldest = |camera: Option<&str>| {
            events(&path, &EventQuery { camera: camera.map(str::to_string), limit: 1, ..EventQuery::default() })
                .unwrap()
                .oldest
        };
        // hall's only event is 3; door's go from 1.
        assert_eq!((oldest(Some("hall")), oldest(Some("door")), oldest(None)), (Some(3), Some(1), Some(1)));
        assert_eq!(oldest(Some("nosuch")), None, "a camera with no events has no oldest");
    }

    #[test]
    fn buckets_hold_the_dominant_emotion_changes_and_faces() {
        let (_dir, path) = filled();
        let b = buckets(&path, "door", 1_000, 3_000, 2).unwrap();
        assert_eq!(b.len(), 2);
        // 1000..2000: Happy ×2, Sad ×1 (tracks 1, 2), two of three changed.
        assert_eq!(b[0].dominant, Some(("Happy".into(), 2)));
        assert_eq!((b[0].events, b[0].debiased, b[0].changed, b[0].faces), (3, 3, 2, 2));
        // 2000..3000: Sad and Angry once each: the tie goes to the first label.
        assert_eq!(b[1].dominant, Some(("Angry".into(), 1)));
        assert_eq!((b[1].events, b[1].changed, b[1].faces), (2, 0, 2));
        let empty = buckets(&path, "nosuch", 1_000, 3_000, 4).unwrap();
        assert!(empty.iter().all(|b| b.events == 0 && b.dominant.is_none()));
    }
}
