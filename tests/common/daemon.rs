//! The real `clefd run` as a child process: started with its log in a file, stopped with
//! SIGTERM on drop. A daemon that cannot bind its HTTP port says so in its log; the HTTP
//! helpers look there when nobody answers, so a taken port fails the test at once with
//! the daemon's words instead of a long timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the daemon logs when it cannot serve HTTP (`src/cmd/run.rs`).
const BIND_FAILED: &str = "cannot serve /metrics and /healthz";

/// The HTTP port and log of every daemon this test binary started.
static HTTP_LOGS: Mutex<Vec<(u16, PathBuf)>> = Mutex::new(Vec::new());

/// A running `clefd run`, stopped with SIGTERM on drop.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Starts `clefd run --config PATH` with its log in `log`.
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let mut cmd = super::clefd();
        cmd.arg("run").arg("--config").arg(config);
        Daemon::spawn(cmd, log)
    }

    /// Starts `cmd` (clefd itself, or a wrapper that execs it: `unshare`, `prlimit`) with
    /// its log in `log`; SIGTERM reaches clefd.
    pub fn spawn(mut cmd: Command, log: &Path) -> Daemon {
        if let Some(port) = http_port(&cmd)
            && let Ok(mut logs) = HTTP_LOGS.lock()
        {
            logs.retain(|(p, _)| *p != port);
            logs.push((port, log.to_path_buf()));
        }
        let file = std::fs::File::create(log).expect("create the daemon's log");
        let child = cmd.env_remove("RUST_LOG").stderr(file).spawn().expect("clefd starts");
        Daemon { child: Some(child) }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The HTTP port in the config that `cmd` runs with (`--config PATH`, `http.listen`).
fn http_port(cmd: &Command) -> Option<u16> {
    let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
    let at = args.iter().position(|a| *a == "--config")?;
    let text = std::fs::read_to_string(args.get(at + 1)?).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    let listen = value.get("http")?.get("listen")?.as_str()?;
    listen.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

/// Panics with the daemon's own words when the daemon meant to serve `port` logged that
/// it cannot bind it (the HTTP helpers call it before each request).
pub fn check_bind(port: u16) {
    let Some(log) = HTTP_LOGS.lock().ok().and_then(|l| l.iter().find(|(p, _)| *p == port).map(|(_, l)| l.clone()))
    else {
        return;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(line) = text.lines().find(|l| l.contains(BIND_FAILED)) {
        panic!("the daemon could not bind its HTTP port {port} (taken by another process?):\n{line}");
    }
}

/// Sends a signal by name (`TERM`, `HUP`, ...) to a process.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
}

/// Waits until the file at `path` (a log) holds `what` at least `n` times; returns its text.
pub fn wait_log(path: &Path, what: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(what).count() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "no {n}x '{what}' in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
