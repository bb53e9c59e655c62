//! The daemon's `/metrics`, read as a scraper would: the one reader every test uses, so
//! a test asserts on the numbers users graph rather than on log lines; and the checks of
//! the exposition itself (promtool, the dashboard's queries).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value of `series` (its name and labels exactly as exposed, e.g.
/// `clefd_frames_analysed_total{camera="a"}`) in an exposition.
pub fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of `series` at the daemon's `/metrics` on `port`; `None` when it does not
/// answer or has no such series.
pub fn metric(port: u16, series: &str) -> Option<f64> {
    let (code, body) = super::http_get(port, "/metrics");
    if code != 200 {
        return None;
    }
    value(&body, series)
}

/// Polls `series` until `pred` holds on its value; returns the value, or panics after
/// `timeout` naming `what` and the last value seen.
pub fn wait_metric(port: u16, series: &str, what: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric(port, series);
        if let Some(v) = v.filter(|v| pred(*v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {series} is {v:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool`: the set-up's copy, else one on PATH.
pub fn promtool() -> PathBuf {
    let local = super::repo().join(".local/bin/promtool");
    if local.exists() { local } else { "promtool".into() }
}

/// Runs `promtool check metrics` on an exposition; `Err` with promtool's words.
pub fn promtool_check(metrics: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (make setup extracts it)");
    // Closed once written, so promtool sees the end of its input.
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(metrics.as_bytes()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if let Some(Err(e)) = written {
        return Err(format!("cannot write to promtool: {e}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// The metric names a Grafana dashboard's queries use (`clefd_…` words in every `expr`).
pub fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(at) = rest.find("clefd_") {
                let word: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + word.len()..];
                names.insert(word);
            }
        }
    }
    names
}
