//! A daemon's set-up as most daemon tests make it: its config written as `clefd.toml` in
//! the test's folder, its HTTP side door on a loopback port, and `clefd run` started with
//! the test hooks it needs, its log beside the config.

use std::path::{Path, PathBuf};

use super::Daemon;

/// Writes `text` as `dir/clefd.toml`; the config's path.
pub fn write_toml(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("clefd.toml");
    std::fs::write(&path, text).expect("write clefd.toml");
    path
}

/// The `[http]` section that serves `/metrics`, `/healthz` and the live view on `port`.
pub fn http_section(port: u16) -> String {
    format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// Starts `clefd run --config CFG` with the environment `env` (test hooks), its log in
/// `clefd.log` beside the config; the daemon and its log.
pub fn run_daemon(cfg: &Path, env: &[(&str, &str)]) -> (Daemon, PathBuf) {
    let log = cfg.with_file_name("clefd.log");
    let mut cmd = super::clefd();
    cmd.arg("run").arg("--config").arg(cfg).envs(env.iter().copied());
    (Daemon::spawn(cmd, &log), log)
}
