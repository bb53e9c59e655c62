//! The day at a glance (`[history]`), with real parts: a looping clip through GStreamer and
//! the debiasing demo bundle in ONNX Runtime, events to a real mosquitto, the history in
//! SQLite. `/api/events` returns exactly what the MQTT consumer got (same `seq`, same
//! JSON), pages and filters hold, the page per camera draws its chart in headless Chromium,
//! and the file keeps to `retain_h` and `max_mb` while events keep coming.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, Consumer, Daemon, TestConfig, http_get};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// A daemon analysing the debiasing demo clip in a loop, with the history on as `f` sets it.
fn start(dir: &Path, broker: &Broker, port: u16, f: impl FnOnce(&mut clefd::config::file::Config)) -> Daemon {
    let clip = common::repo().join("assets/context-bias-anti.mp4");
    let cfg = TestConfig::new(dir, &broker.url(), "hist")
        .http(port)
        .looping_file("hall", &clip)
        .with(|c| {
            c.engine.bundle = common::repo().join("engines/context-bias-demo");
            c.history.enabled = true;
            f(c);
        })
        .write();
    Daemon::start(&cfg, &dir.join("clefd.log"))
}

/// `GET path` as JSON, asserting a 200.
fn get_json(port: u16, path: &str) -> Value {
    let (code, body) = http_get(port, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Every event the API holds, following `next` links from `first`; the pages' sizes too.
fn all_pages(port: u16, first: &str) -> (Vec<Value>, Vec<usize>) {
    let (mut events, mut sizes, mut next) = (Vec::new(), Vec::new(), Some(first.to_string()));
    while let Some(path) = next {
        let page = get_json(port, &path);
        let batch = page["events"].as_array().expect("events").clone();
        assert_eq!(page["count"].as_u64(), Some(batch.len() as u64), "{page}");
        sizes.push(batch.len());
        events.extend(batch);
        next = page["next"].as_str().map(str::to_string);
        assert!(sizes.len() < 10_000, "the next links never end");
    }
    (events, sizes)
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().expect("a seq")).collect()
}

/// The label with the highest value in a `{label: value}` object.
fn top(values: &Value) -> String {
    let map = values.as_object().expect("label values");
    map.iter().max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap())).unwrap().0.clone()
}

/// Runs headless Chromium with `args` on `url` (its own profile in `dir`); its stdout.
fn chromium(dir: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--no-first-run"])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/setup.sh --test installs it)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_api_returns_what_consumers_got_and_the_page_draws_the_day() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let daemon = start(dir.path(), &broker, port, |_| {});
    consumer.wait_for("eight events from hall", WAIT, |m| common::seqs(m, "hist").len() >= 8);
    let got: BTreeMap<u64, Value> =
        consumer.on("/hall/emotion").into_iter().map(|m| (m.body["seq"].as_u64().unwrap(), m.body)).collect();
    let last = *got.keys().last().unwrap();

    // Every event the consumer got is in the history, the same JSON under the same seq.
    let deadline = Instant::now() + WAIT;
    let (events, _) = loop {
        let all = all_pages(port, "/api/events?camera=hall&limit=1000");
        if seqs(&all.0).contains(&last) || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let kept: BTreeMap<u64, &Value> = events.iter().map(|e| (e["seq"].as_u64().unwrap(), e)).collect();
    for (seq, body) in &got {
        assert_eq!(kept.get(seq), Some(&body), "event {seq} as the consumer got it, in the history");
    }
    let all = seqs(&events);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "by seq, each once: {all:?}");

    // Paging: two at a time, the next links walk the same events.
    let (paged, sizes) = all_pages(port, &format!("/api/events?camera=hall&limit=2&until={}", u64::MAX >> 12));
    let paged = seqs(&paged);
    assert!(sizes.iter().all(|&n| n <= 2) && sizes.len() >= 4, "{sizes:?}");
    assert_eq!(paged[..all.len()], all[..], "the pages hold the same events in order");

    // Filters: a time window by RFC 3339 and by unix ms, and another camera.
    let third = got.values().nth(2).unwrap();
    let since = third["ts"].as_str().unwrap();
    let (window, _) = all_pages(port, &format!("/api/events?camera=hall&since={since}&limit=1000"));
    assert!(!window.is_empty() && window.iter().all(|e| e["ts"].as_str().unwrap() >= since), "{window:?}");
    assert!(!seqs(&window).contains(got.keys().next().unwrap()), "since leaves earlier events out");
    let ts_ms = |e: &Value| {
        time::OffsetDateTime::parse(e["ts"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap()
    };
    let until = ts_ms(third);
    let (before, _) = all_pages(port, &format!("/api/events?until={until}"));
    assert!(!before.is_empty() && before.iter().all(|e| ts_ms(e) < until), "{before:?}");
    assert_eq!(get_json(port, "/api/events?camera=nosuch")["count"], 0);
    let (code, body) = http_get(port, "/api/events?since=yesterday");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("since: 'yesterday' is neither an RFC 3339 time"), "{body}");
    assert_eq!(http_get(port, "/api/events?limit=5000").0, 400);

    // The page: linked from the index, its chart in the DOM as Chromium builds it.
    let (_, index) = http_get(port, "/");
    assert!(index.contains("href=\"/cameras/hall/history\""), "{index}");
    let url = format!("http://127.0.0.1:{port}/cameras/hall/history?hours=1");
    let dom = chromium(dir.path(), &["--dump-dom"], &url);
    assert!(dom.contains("<svg id=\"history-chart\""), "{dom}");
    let emotions: Vec<String> = got.values().map(|e| e["emotion"].as_str().unwrap().to_string()).collect();
    let drawn = dom.matches("class=\"emotion\"").count();
    assert!(drawn >= 1, "a column of dominant emotion: {dom}");
    assert!(emotions.iter().any(|e| dom.contains(&format!("data-emotion=\"{e}\""))), "{emotions:?} in {dom}");
    assert!(dom.contains("class=\"faces\" data-faces=\""), "{dom}");
    let changed = got.values().filter(|e| top(&e["factual"]) != e["emotion"].as_str().unwrap()).count();
    // The anti-bias clip is made so that debiasing changes decisions: the check cannot skip.
    assert!(changed > 0, "debiasing changed none of {} decisions on the anti-bias clip", got.len());
    assert!(dom.contains("class=\"changed\""), "{changed} changed decisions drawn: {dom}");
    assert!(dom.contains("debiasing changed the factual decision in"), "{dom}");

    // A name that no camera can have is refused before the page is drawn: 300
    // `{chart}`s in it once made a page of megabytes.
    let (code, body) = http_get(port, &format!("/cameras/{}/history", "%7Bchart%7D".repeat(300)));
    assert_eq!(code, 404, "{body}");
    assert!(body.len() < 1_000 && body.contains("no such camera"), "{} bytes: {body:.200}", body.len());
    // A name a camera could have, but none configured has: not an empty day, a 404.
    let (code, body) = http_get(port, "/cameras/porch/history");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("'porch' is not configured"), "{body}");

    // A phone's width: the picture Chromium takes (docs/history-phone.png is one).
    let shot = dir.path().join("history-phone.png");
    chromium(
        dir.path(),
        &["--window-size=390,844", "--hide-scrollbars", &format!("--screenshot={}", shot.display())],
        &url,
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{} bytes", png.len());
    if let Some(keep) = std::env::var_os("CLEFD_HISTORY_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    let written = common::metric(port, "clefd_history_written_total").expect("the history's metrics");
    assert!(written >= got.len() as f64, "{written} written");
    assert_eq!(common::metric(port, "clefd_history_dropped_total"), Some(0.0));
    assert!(daemon.stop(), "clefd exits 0");
}

/// Starts a daemon with `[history]` set by `f` and an event every 0.1 s per face, and
/// waits until the history pruned something and `min_events` were sent; the broker (kept
/// alive), the consumer, the daemon, the port and the largest size the file had meanwhile.
fn flood(
    dir: &Path,
    min_events: usize,
    f: impl FnOnce(&mut clefd::config::file::Config),
) -> (Broker, Consumer, Daemon, u16, u64) {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let port = common::free_port();
    let daemon = start(dir, &broker, port, |c| {
        c.events.heartbeat_s = 0.1;
        f(c);
    });
    let file = dir.join("state/history.sqlite");
    let mut largest = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        largest = largest.max(std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0));
        let pruned = common::metric(port, "clefd_history_pruned_total").unwrap_or(0.0);
        let sent = common::seqs(&consumer.messages(), "hist").len();
        if pruned > 0.0 && sent >= min_events {
            break;
        }
        assert!(Instant::now() < deadline, "no pruning after {sent} events (largest file {largest} bytes)");
        std::thread::sleep(Duration::from_millis(50));
    }
    (broker, consumer, daemon, port, largest)
}

/// The events the history holds for `hall` (the first thousand), and those the consumer got.
fn kept_and_sent(port: u16, consumer: &Consumer) -> (Vec<Value>, Vec<common::Received>) {
    let page = get_json(port, "/api/events?camera=hall&limit=1000");
    let events = page["events"].as_array().unwrap().clone();
    let first = events.first().map_or(Value::Null, |e| e["seq"].clone());
    assert_eq!(page["oldest_seq"], first, "the oldest kept event is the first of the page");
    (events, consumer.on("/hall/emotion"))
}

#[test]
fn the_file_stays_under_max_mb_whatever_the_event_rate() {
    let dir = tempfile::tempdir().unwrap();
    // A quarter of a megabyte and an hour: 400 events of about a kilobyte do not fit.
    let (_broker, consumer, daemon, port, largest) = flood(dir.path(), 400, |c| {
        c.history.retain_h = 1.0;
        c.history.max_mb = 0.25;
    });
    let max = 256 * 1024;
    assert!(largest <= max, "the file grew to {largest} bytes, over max_mb ({max})");
    let (kept, sent) = kept_and_sent(port, &consumer);
    assert!(!kept.is_empty() && kept.len() < sent.len(), "{} kept of {} sent", kept.len(), sent.len());
    assert!(kept[0]["seq"].as_u64() > sent[0].body["seq"].as_u64(), "the oldest events went first");
    let size = common::metric(port, "clefd_history_bytes").unwrap();
    assert!(size > 0.0 && size <= max as f64, "{size}");
    assert!(daemon.stop(), "clefd exits 0");
}

#[test]
fn events_older_than_retain_h_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // 14.4 s, and room for far more.
    let (_broker, consumer, daemon, port, _) = flood(dir.path(), 100, |c| c.history.retain_h = 0.004);
    let retain_ms = 14_400;
    let (kept, sent) = kept_and_sent(port, &consumer);
    assert!(!kept.is_empty() && kept[0]["seq"].as_u64() > sent[0].body["seq"].as_u64(), "the first events went");
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    for e in &kept {
        let ts = time::OffsetDateTime::parse(e["ts"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
        let age = now_ms - ts.unix_timestamp_nanos() / 1_000_000;
        // Pruned with each batch: at most a batch's gathering and a few polls late.
        assert!(age < retain_ms + 5_000, "event {} is {age} ms old, beyond retain_h", e["seq"]);
    }
    assert!(daemon.stop(), "clefd exits 0");
}

/// The spool's commit file cannot be written (a folder holds its temp file's name), so
/// every sync of the spool reports an error, though each event is on disk and sent: the
/// history keeps what was sent. It once left out every group whose sync reported anything.
#[test]
fn what_is_sent_is_kept_when_the_spool_s_sync_reports_trouble() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state/spool/acked.tmp")).unwrap();
    let port = common::free_port();
    let daemon = start(dir.path(), &broker, port, |_| {});
    consumer.wait_for("four events from hall", WAIT, |m| common::seqs(m, "hist").len() >= 4);
    let (_, health) = http_get(port, "/healthz");
    assert!(health.contains("cannot flush the event spool to disk"), "the sync reports trouble: {health}");
    let sent: Vec<u64> = consumer.on("/hall/emotion").iter().map(|m| m.body["seq"].as_u64().unwrap()).collect();
    let last = *sent.last().unwrap();
    let deadline = Instant::now() + WAIT;
    let kept = loop {
        let kept = seqs(&all_pages(port, "/api/events?camera=hall&limit=1000").0);
        if kept.contains(&last) || Instant::now() > deadline {
            break kept;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let missing: Vec<_> = sent.iter().filter(|s| !kept.contains(s)).collect();
    assert!(missing.is_empty(), "sent but not in the history: {missing:?} (kept {kept:?})");
    assert!(daemon.stop(), "clefd exits 0");
}
