//! The service's part of `clefd doctor`, what makes it a health check: the broker answers
//! with the configured credentials and TLS, `http.listen` can be bound (or a clefd is
//! serving there), `state_dir` and the spool can be written and have room, and, with
//! `--cameras`, each enabled camera delivers a frame.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clefd::config::Settings;
use clefd::mqtt::session::{self, SessionEvent, SessionOptions};

use super::{Verdict, line};

/// How long the broker has to accept us: rumqttc gives up on a silent host after 5 s.
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// How long a camera has to deliver its first frame (an RTSP camera may take seconds).
const CAMERA_WAIT: Duration = Duration::from_secs(15);

/// Room the state folder needs besides the spool: the sequence file, snapshots' index.
const STATE_ROOM: u64 = 1 << 20;

/// Connects to the broker as the daemon would (same URL, protocol, credentials, TLS),
/// under its own client id so a running daemon is not thrown off, and disconnects.
pub(super) fn report_broker(settings: &Settings, verdict: &mut Verdict) {
    let url = &settings.mqtt.connection.url;
    let cfg = match super::super::options::publisher_config(settings) {
        Ok(c) => c,
        Err(e) => {
            line("broker", format!("{url}: cannot connect: {e:#}"));
            verdict.fail(format!("the broker cannot be reached: {e:#}"));
            return;
        }
    };
    let opts = SessionOptions {
        protocol: cfg.protocol,
        url: cfg.url.clone(),
        client_id: format!("{}-doctor", cfg.client_id),
        keep_alive: Duration::from_secs(30),
        credentials: cfg.credentials.clone(),
        tls: cfg.tls.clone(),
        last_will: None,
        inflight: 1,
        persistent: false,
        max_incoming: 64 * 1024,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            verdict.fail(format!("cannot start a runtime to reach the broker: {e}"));
            return;
        }
    };
    let answer = rt.block_on(async {
        let mut s = session::open(&opts, 8);
        let answer = match tokio::time::timeout(BROKER_WAIT, s.events.recv()).await {
            Ok(Some(Ok(SessionEvent::Connected))) => Ok(()),
            Ok(Some(Ok(other))) => Err(format!("unexpected first answer {other:?}")),
            Ok(Some(Err(e))) => Err(e.message),
            Ok(None) => Err("the connection ended before the broker answered".into()),
            Err(_) => Err(format!("no answer within {} s", BROKER_WAIT.as_secs())),
        };
        if answer.is_ok() {
            s.client.disconnect().await;
        }
        s.poller.abort();
        answer
    });
    let how = format!(
        "{}{}{}",
        cfg.protocol,
        if cfg.tls.is_some() { ", TLS" } else { "" },
        cfg.credentials.as_ref().map_or_else(String::new, |(u, _)| format!(", user {u}"))
    );
    match answer {
        Ok(()) => line("broker", format!("{url}: accepted us ({how})")),
        Err(reason) => {
            line("broker", format!("{url}: NOT reachable ({how}): {reason}"));
            verdict.fail(format!("the broker at {url} did not accept us: {reason}"));
        }
    }
}

/// `http.listen` can be bound, or a clefd already serves there (the running daemon).
pub(super) fn report_http(settings: &Settings, verdict: &mut Verdict) {
    let Some(addr) = settings.http.as_ref().map(|h| h.listen) else {
        line("http", "off (http.listen = \"\")");
        return;
    };
    match TcpListener::bind(addr) {
        Ok(_) => line("http", format!("{addr}: free to serve /metrics and /healthz")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && serves_clefd(addr) => {
            line("http", format!("{addr}: in use by a running clefd (it answers /healthz)"))
        }
        Err(e) => {
            line("http", format!("{addr}: cannot be bound: {e}"));
            verdict.fail(format!(
                "http.listen {addr} cannot be bound ({e}): another program holds it, or the address is not this \
                 machine's; change http.listen"
            ));
        }
    }
}

/// Whether `addr` answers `GET /healthz` the way clefd does.
fn serves_clefd(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: clefd\r\n\r\n").is_err() {
        return false;
    }
    let mut text = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    text.starts_with("HTTP/1.") && text.contains("\"cameras\"")
}

/// `state_dir` and the spool folder: writable, with room for what the config promises.
/// The spool may grow to `mqtt.spool_max_bytes` in all, so the room it still needs is that
/// less what its segments already hold (a spool holding its full share needs none more).
pub(super) fn report_folders(settings: &Settings, verdict: &mut Verdict) {
    let spool = &settings.mqtt.spool_dir;
    let held = spool_bytes(spool);
    if held > 0 {
        line("  spool holds", format!("{} kB of its {} kB", held >> 10, settings.mqtt.spool_max_bytes >> 10));
    }
    for (key, dir, room) in [
        ("state_dir", &settings.state_dir, STATE_ROOM),
        ("mqtt.spool_dir", spool, settings.mqtt.spool_max_bytes.saturating_sub(held).max(STATE_ROOM)),
    ] {
        match check_folder(dir, room) {
            Ok(free) => line(key, format!("{}: writable, {} MB free", dir.display(), free >> 20)),
            Err(reason) => {
                line(key, format!("{}: {reason}", dir.display()));
                verdict.fail(format!("{key} {}: {reason}", dir.display()));
            }
        }
    }
}

/// Bytes the spool's segments (`*.seg`) in `dir` hold now; 0 where there are none.
fn spool_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Writes and removes a probe file in `dir` (or, while it does not exist yet, in the
/// nearest folder above it, where the daemon would create it); returns the free bytes.
fn check_folder(dir: &Path, room: u64) -> Result<u64, String> {
    let existing: PathBuf = dir.ancestors().find(|a| a.is_dir()).map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let note =
        if existing == dir { String::new() } else { format!(" (not there yet: checked {})", existing.display()) };
    let probe = existing.join(format!(".clefd-doctor-{}", std::process::id()));
    let written = std::fs::File::create_new(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("not writable{note}: {e}"))?;
    let free = free_bytes(&existing).map_err(|e| format!("cannot tell the free space{note}: {e}"))?;
    if free < room {
        return Err(format!("only {} kB free{note}, {} kB needed", free >> 10, room >> 10));
    }
    Ok(free)
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
#[allow(clippy::useless_conversion)] // statvfs's field types differ between targets
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `st` is a zeroed statvfs the call fills in.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// `--cameras`: each enabled camera is opened and must deliver one frame.
pub(super) fn report_cameras(settings: &Settings, verdict: &mut Verdict) {
    let (options, unusable) = super::super::options::pipeline_options(settings);
    for (name, reason) in unusable {
        line(&format!("camera {name}"), format!("cannot start: {reason}"));
        verdict.fail(format!("camera {name}: {reason}"));
    }
    for (name, plan) in options.cameras {
        match first_frame(plan.source.camera) {
            Ok((w, h)) => line(&format!("camera {name}"), format!("answers ({w}x{h})")),
            Err(reason) => {
                line(&format!("camera {name}"), format!("does NOT answer: {reason}"));
                verdict.fail(format!("camera {name} does not answer: {reason}"));
            }
        }
    }
}

/// Opens one camera, waits for its first frame or its end, and stops it.
fn first_frame(camera: clefd::source::CameraOptions) -> Result<(usize, usize), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(usize, usize), String>>(2);
    let on_end = tx.clone();
    let started = clefd::source::Camera::start(
        camera,
        move |f| {
            let _ = tx.try_send(Ok((f.width, f.height)));
        },
        move |ended| {
            let _ = on_end.try_send(Err(match ended {
                clefd::source::Ended::Error(e) => e,
                other => format!("the stream ended before a frame ({other:?})"),
            }));
        },
    )
    .map_err(|e| e.to_string())?;
    let answer =
        rx.recv_timeout(CAMERA_WAIT).unwrap_or_else(|_| Err(format!("no frame within {} s", CAMERA_WAIT.as_secs())));
    started.stop();
    answer
}
