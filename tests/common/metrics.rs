//! The daemon's `/metrics`, read as a scraper would: the one reader every test uses, so
//! a test asserts on the numbers users graph rather than on log lines.

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
