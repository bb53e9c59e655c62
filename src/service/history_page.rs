//! The history's HTTP routes: `/cameras/{camera}/history` (the day at a glance, a page
//! rendered on the device) and `/api/events` (the kept events as JSON, a page at a time,
//! for a consumer that was away longer than its broker session), and the history's
//! series for `/metrics`. Queries run on the blocking pool, never on the runtime's threads.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use tokio::sync::Semaphore;

use crate::history::query::{self, EventQuery};
use crate::history::{History, HistoryError};
use crate::service::http::Health;

/// Events an API page holds unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Hours the page shows unless `hours` says otherwise.
const DEFAULT_HOURS: f64 = 6.0;
/// Buckets across the page's chart.
const BUCKETS: usize = 72;

/// History queries running at once, at most: more requests wait their turn, so a burst
/// cannot fill the blocking pool with connections reading the same file.
static QUERIES: Semaphore = Semaphore::const_new(4);

/// The history's routes, for the server's router; `health` knows which cameras are
/// configured, so a page is drawn for those only.
pub fn routes<S: Clone + Send + Sync + 'static>(health: Arc<Health>) -> Router<S> {
    Router::new().route("/cameras/{camera}/history", get(page)).route("/api/events", get(api)).with_state(health)
}

/// Runs `query` on the blocking pool once one of `turns` is free. The turn goes with the
/// query, not the request: a client that leaves mid-query drops the request's future,
/// while its query runs on and still holds a connection to the file.
async fn on_the_pool<T: Send + 'static>(
    turns: &'static Semaphore,
    query: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, Response> {
    let Ok(turn) = turns.acquire().await else { return Err(error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")) };
    let ran = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        query()
    });
    match ran.await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(failed(e)),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the history query did not finish")),
    }
}

/// A JSON error: what is wrong, for a person reading it.
fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": reason.into() }).to_string() + "\n";
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no history is kept: set `enabled = true` under [history] in clefd.toml and restart clefd",
    )
}

/// A query that failed: the reason (the file's path, SQLite's words) goes to the log, not
/// to whoever asked.
fn failed(e: HistoryError) -> Response {
    tracing::warn!(error = %e, "cannot read the history");
    super::server::unavailable(error(StatusCode::OK, "cannot read the history now: the daemon's log says why"))
}

/// A time given as RFC 3339 (`2026-12-07T09:00:00Z`) or as unix milliseconds.
fn parse_time(name: &str, v: &str) -> Result<i64, String> {
    if let Ok(ms) = v.parse::<i64>() {
        // Before 1973 in milliseconds, a time up to 5138 in seconds: surely seconds.
        if ms < 100_000_000_000 {
            return Err(format!("{name}: '{v}' looks like unix seconds: give milliseconds ({v}000) or RFC 3339"));
        }
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("{name}: '{v}' is neither an RFC 3339 time (2026-12-07T09:00:00Z) nor unix milliseconds"))
}

/// `/api/events`'s query string, checked.
fn event_query(uri: &Uri) -> Result<EventQuery, String> {
    let mut q = EventQuery { limit: DEFAULT_LIMIT, ..EventQuery::default() };
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "camera" => q.camera = Some(v.into_owned()),
            "since" => q.since_ms = Some(parse_time("since", &v)?),
            "until" => q.until_ms = Some(parse_time("until", &v)?),
            "after" => {
                q.after_seq = Some(v.parse().map_err(|_| format!("after: '{v}' is not a seq (a whole number)"))?)
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=query::MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit: '{v}' is not a number from 1 to {}", query::MAX_LIMIT))?;
            }
            other => return Err(format!("unknown parameter '{other}': use camera, since, until, after and limit")),
        }
    }
    if let (Some(s), Some(u)) = (q.since_ms, q.until_ms)
        && s > u
    {
        return Err("since is after until".into());
    }
    Ok(q)
}

/// The link to the page after `last`, with the same filters.
fn next_link(q: &EventQuery, last: u64) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    if let Some(c) = &q.camera {
        s.append_pair("camera", c);
    }
    if let Some(t) = q.since_ms {
        s.append_pair("since", &t.to_string());
    }
    if let Some(t) = q.until_ms {
        s.append_pair("until", &t.to_string());
    }
    s.append_pair("limit", &q.limit.to_string()).append_pair("after", &last.to_string());
    format!("/api/events?{}", s.finish())
}

async fn api(uri: Uri) -> Response {
    let Some(history) = crate::history::installed() else { return off() };
    let q = match event_query(&uri) {
        Ok(q) => q,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let path = history.path();
    let asked = q.clone();
    let page = match on_the_pool(&QUERIES, move || query::events(&path, &asked)).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    // The events exactly as they were published, side by side.
    let next = match page.events.last() {
        Some((last, _)) if page.more => serde_json::Value::String(next_link(&q, *last)),
        _ => serde_json::Value::Null,
    };
    let mut body = String::from("{\"events\":[");
    for (i, (_, payload)) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(payload);
    }
    let oldest = page.oldest.map_or(serde_json::Value::Null, serde_json::Value::from);
    body += &format!("],\"count\":{},\"next\":{next},\"oldest_seq\":{oldest}}}\n", page.events.len());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn page(State(health): State<Arc<Health>>, Path(camera): Path<String>, uri: Uri) -> Response {
    let Some(history) = crate::history::installed() else { return off() };
    if !camera_name(&camera) {
        return error(StatusCode::NOT_FOUND, "no such camera: names are 1 to 64 of A-Z a-z 0-9 . _ - (see /)");
    }
    // A name no camera has would draw an empty day, as if the camera saw no one.
    if !super::live::known(&health, &camera) {
        return error(StatusCode::NOT_FOUND, format!("no such camera: '{camera}' is not configured (see /)"));
    }
    let retain_h = history.settings.retain.as_secs_f64() / 3600.0;
    let mut hours = DEFAULT_HOURS.min(retain_h);
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k == "hours" {
            match v.parse::<f64>() {
                Ok(h) if h > 0.0 && h <= retain_h => hours = h,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("hours: '{v}' is not a number above 0 and at most {retain_h} (history.retain_h)"),
                    );
                }
            }
        }
    }
    let to_ms = crate::history::now_ms();
    let from_ms = to_ms - (hours * 3_600_000.0) as i64;
    let (path, name) = (history.path(), camera.clone());
    let buckets = match on_the_pool(&QUERIES, move || query::buckets(&path, &name, from_ms, to_ms, BUCKETS)).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let html = super::history_chart::page(&camera, hours, retain_h, &buckets, stats_line(history));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// Whether `camera` can be a configured camera's name (what `check-config` allows), so
/// any other path is refused before it reaches the file or the page.
fn camera_name(camera: &str) -> bool {
    !camera.is_empty()
        && camera.len() <= 64
        && camera.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
}

/// What the history did, in a line for the page's footer.
fn stats_line(h: &History) -> String {
    let s = &h.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut line = format!(
        "File {:.1} of {:.0} MB (history.max_mb). Since clefd started: {} events written, {} pruned, {} dropped (writer behind), {} lost to the disk, {} damaged files set aside",
        load(&s.bytes) as f64 / 1_048_576.0,
        h.settings.max_bytes as f64 / 1_048_576.0,
        load(&s.written),
        load(&s.pruned),
        load(&s.dropped),
        load(&s.failed),
        load(&s.set_aside),
    );
    if let Some(problem) = s.problem.lock().ok().and_then(|p| p.clone()) {
        line += &format!("; cannot write now: {problem}");
    }
    line
}

/// The history's series for `/metrics`; none when it is off.
pub fn metric_families() -> Vec<MetricFamily> {
    let Some(h) = crate::history::installed() else { return Vec::new() };
    let s = &h.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let family = |name: &str, help: &str, kind: MetricType, value: f64| {
        let mut m = Metric::default();
        if kind == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        let mut f = MetricFamily::default();
        f.set_name(name.into());
        f.set_help(help.into());
        f.set_field_type(kind);
        f.set_metric(vec![m]);
        f
    };
    let writable = f64::from(u8::from(s.problem.lock().map(|p| p.is_none()).unwrap_or(false)));
    vec![
        family("clefd_history_written_total", "Events written to the history.", MetricType::COUNTER, load(&s.written)),
        family(
            "clefd_history_dropped_total",
            "Events left out of the history because its writer was behind.",
            MetricType::COUNTER,
            load(&s.dropped),
        ),
        family(
            "clefd_history_failed_total",
            "Events left out of the history because the disk refused them.",
            MetricType::COUNTER,
            load(&s.failed),
        ),
        family(
            "clefd_history_pruned_total",
            "Events deleted from the history for age (retain_h) or size (max_mb).",
            MetricType::COUNTER,
            load(&s.pruned),
        ),
        family(
            "clefd_history_set_aside_total",
            "Damaged history files moved aside (history.sqlite.corrupt-<ms>) for a new one.",
            MetricType::COUNTER,
            load(&s.set_aside),
        ),
        family("clefd_history_bytes", "Size of the history's file.", MetricType::GAUGE, load(&s.bytes)),
        family("clefd_history_writable", "0 while the history cannot be written.", MetricType::GAUGE, writable),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<EventQuery, String> {
        event_query(&s.parse::<Uri>().unwrap())
    }

    #[test]
    fn the_query_takes_rfc3339_or_unix_ms_and_names_what_is_wrong() {
        let a = q("/api/events?camera=door&since=2026-12-07T00:00:01.5Z&until=1796601700000&limit=5&after=7").unwrap();
        assert_eq!(a.camera.as_deref(), Some("door"));
        assert_eq!(
            (a.since_ms, a.until_ms, a.limit, a.after_seq),
            (Some(1_796_601_601_500), Some(1_796_601_700_000), 5, Some(7))
        );
        assert_eq!(q("/api/events").unwrap().limit, DEFAULT_LIMIT);
        assert!(q("/api/events?since=yesterday").unwrap_err().starts_with("since: 'yesterday'"));
        assert!(q("/api/events?limit=0").unwrap_err().starts_with("limit:"));
        assert!(q("/api/events?limit=1001").unwrap_err().starts_with("limit:"));
        assert!(q("/api/events?after=-1").unwrap_err().starts_with("after:"));
        assert!(q("/api/events?cam=door").unwrap_err().contains("unknown parameter 'cam'"));
        assert_eq!(q("/api/events?since=1796601700001&until=1796601700000").unwrap_err(), "since is after until");
        assert!(q("/api/events?since=1796601700").unwrap_err().contains("looks like unix seconds"));
    }

    /// Turns of this test's own, so no other test's queries count.
    static TURNS: Semaphore = Semaphore::const_new(4);

    #[test]
    fn a_client_that_leaves_mid_query_keeps_its_turn_until_the_query_ends() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (started, running) = std::sync::mpsc::channel();
        let (finish, finishing) = std::sync::mpsc::channel::<()>();
        let request = rt.spawn(on_the_pool(&TURNS, move || {
            let _ = started.send(());
            let _ = finishing.recv();
            Ok(())
        }));
        running.recv_timeout(std::time::Duration::from_secs(60)).expect("the query runs");
        // The client goes: its request's future is dropped while the query runs on.
        request.abort();
        assert!(rt.block_on(request).is_err_and(|e| e.is_cancelled()));
        assert_eq!(TURNS.available_permits(), 3, "the running query still holds its turn");
        finish.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while TURNS.available_permits() < 4 {
            assert!(std::time::Instant::now() < deadline, "the turn came back once the query ended");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn the_next_link_keeps_the_filters() {
        let a = q("/api/events?camera=front%20door&since=1796601700000&limit=5").unwrap();
        let next = next_link(&a, 42);
        assert_eq!(next, "/api/events?camera=front+door&since=1796601700000&limit=5&after=42");
        let again = q(&next).unwrap();
        assert_eq!(again, EventQuery { after_seq: Some(42), ..a });
    }
}
