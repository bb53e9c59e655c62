//! Plain HTTP/1.1 GETs against the daemon's listener, and polling until an answer says
//! what a test waits for. Nobody answering makes them look for the daemon's bind error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// GET over plain HTTP/1.1: the status code and the body (0 and "" when nobody answers;
/// panics at once if the daemon meant to answer logged that it cannot bind the port).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    // Whoever holds the port may accept and never answer: look at the daemon's log first.
    super::daemon::check_bind(port);
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // One request per connection, read to its end: say so (HTTP/1.1 keeps it open else).
    if write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Polls `GET path` until `pred(code, body)` holds; returns the body, or panics after
/// `timeout` with the last answer.
pub fn wait_http(port: u16, path: &str, what: &str, timeout: Duration, pred: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = http_get(port, path);
        if pred(code, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last answer {code}:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
