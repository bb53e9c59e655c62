//! Test support: a real mosquitto on a free loopback port, the real `clefd` binary run
//! with typed configs, one MQTT consumer, one `/metrics` reader, synthesised clips.
//!
//! Each integration test binary compiles this module on its own and uses part of it, so
//! helpers one binary leaves unused are normal there: the modules below allow dead code
//! for that reason only (every helper is used by some test binary).

#[allow(dead_code)]
pub mod bench;
#[allow(dead_code)]
pub mod broker;
#[allow(dead_code)]
pub mod clips;
#[allow(dead_code)]
pub mod config;
#[allow(dead_code)]
pub mod consumer;
#[allow(dead_code)]
pub mod consumer5;
#[allow(dead_code)]
pub mod daemon;
#[allow(dead_code)]
pub mod encode;
#[allow(dead_code)]
pub mod http;
#[allow(dead_code)]
pub mod link;
#[allow(dead_code)]
pub mod metrics;
#[allow(dead_code)]
pub mod not_run;
#[allow(dead_code)]
pub mod notify;
#[allow(dead_code)]
pub mod rtsp;
#[allow(dead_code)]
pub mod setup;
/// Synthetic clips: the CLI's `make-clip` code, shared with the tests.
#[path = "../../src/cmd/synth.rs"]
#[allow(dead_code)]
pub mod synth;

#[allow(unused_imports)]
pub use self::{
    bench::Bench,
    broker::Broker,
    clips::{astronaut, astronaut_clip, file_camera, hardware_decoder_installed, passing_clip, still_clip},
    config::{TestConfig, base_config, write_config},
    consumer::{Consumer, Received, seqs},
    consumer5::{Consumer5, Received5},
    daemon::{Daemon, signal, wait_log},
    http::{http_get, wait_http},
    link::Link,
    metrics::{dashboard_metrics, metric, promtool_check, wait_metric},
    not_run::could_not_run,
    notify::{NotifyLog, notify_listen, notify_wait},
    setup::{http_section, run_daemon, write_toml},
};

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
#[allow(dead_code)]
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The demo bundle.
#[allow(dead_code)]
pub fn demo_bundle() -> PathBuf {
    repo().join("engines/face-fer2013")
}

/// The built `clefd` binary.
#[allow(dead_code)]
pub fn clefd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clefd"))
}

/// Runs clefd with arguments, capturing output.
#[allow(dead_code)]
pub fn run_clefd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = clefd();
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("clefd runs")
}

/// A port nobody listens on right now (someone may take it before the test binds it:
/// the broker moves, and the daemon's bind error fails the test at once).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The event schema: the project's shared contract (`../shared/schema`) when it is beside
/// the checkout, else the committed copy, which must not drift from it.
#[allow(dead_code)]
pub fn event_schema() -> String {
    let copy = std::fs::read_to_string(repo().join("tests/schema/emotion-event-v2.schema.json"))
        .expect("schema copy is committed");
    if let Ok(shared) = std::fs::read_to_string(repo().join("../shared/schema/emotion-event-v2.schema.json")) {
        assert_eq!(shared, copy, "tests/schema/ is out of date with shared/schema/: copy it again");
        return shared;
    }
    copy
}
