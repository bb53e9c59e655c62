//! A stand-in for systemd's `NOTIFY_SOCKET`: records what the daemon tells systemd
//! (`READY=1`, `WATCHDOG=1`, `STATUS=`...) with the time each came.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages a test's stand-in for systemd received on `NOTIFY_SOCKET`, with their time.
pub type NotifyLog = Arc<Mutex<Vec<(Instant, String)>>>;

/// Binds a notify socket at `path` and records every datagram until the log is dropped.
pub fn notify_listen(path: &Path) -> NotifyLog {
    let sock = std::os::unix::net::UnixDatagram::bind(path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("a read timeout");
    let log: NotifyLog = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = sock.recv(&mut buf)
                && let Ok(mut l) = l.lock()
            {
                l.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            if Arc::strong_count(&l) == 1 {
                return;
            }
        }
    });
    log
}

/// Waits until a notify message contains `what`; returns when it came.
pub fn notify_wait(log: &NotifyLog, what: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = log.lock().expect("the notify log").clone();
        if let Some((t, _)) = seen.iter().find(|(_, m)| m.contains(what)) {
            return *t;
        }
        assert!(Instant::now() < deadline, "no {what}: {:?}", seen.iter().map(|(_, m)| m).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(50));
    }
}
