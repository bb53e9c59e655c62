//! The real world of a torture run: a persistent mosquitto, a persistent subscriber, the
//! real `clefd run` with `mqtt.control` and Home Assistant discovery on, a stand-in for
//! systemd's notify socket, an RTSP server, clips that loop, end or are damaged, and live
//! viewers. [`Rig::execute`] does one step to it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::model::{Bundle, Kind, Model};
use super::steps::{self, Step};
use crate::common::consumer::Consumer;
use crate::common::{self, Broker, Daemon, NotifyLog, rtsp::RtspServer};

/// The device name in every topic.
pub const DEVICE: &str = "tort";

/// The clips file cameras play, made once per test process.
pub struct Clips {
    _dir: tempfile::TempDir,
    pub looping: PathBuf,
    pub ending: PathBuf,
    pub damaged: PathBuf,
}

impl Clips {
    pub fn make() -> Clips {
        let dir = tempfile::tempdir().unwrap();
        let looping = dir.path().join("loop.mp4");
        common::astronaut_clip(&looping, 2.0, 10);
        let ending = dir.path().join("end.mp4");
        common::still_clip(&ending, 30);
        // The same clip with its middle third overwritten: decoding breaks down mid-way.
        let damaged = dir.path().join("torn.mp4");
        let mut bytes = std::fs::read(&ending).unwrap();
        let third = bytes.len() / 3;
        for (i, b) in bytes[third..2 * third].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        std::fs::write(&damaged, bytes).unwrap();
        Clips { _dir: dir, looping, ending, damaged }
    }
}

/// A live stream of videotestsrc, as a real IP camera would send it.
fn rtsp_launch() -> String {
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=5/1 ! \
     x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        .to_string()
}

/// A flood sent by the last step, checked once all its answers are in.
#[derive(Debug, Clone)]
pub struct Flood {
    pub topic: String,
    pub first: usize,
    pub n: usize,
    pub cameras: Vec<&'static str>,
}

/// Commands sent at once on one topic (one step's): where their answers start in the
/// topic's list, and how many there are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    pub first: usize,
    pub n: usize,
}

/// Everything one run drives.
pub struct Rig {
    pub dir: tempfile::TempDir,
    broker: Broker,
    /// A persistent-session subscriber to `#`, emptied at each look.
    pub tap: Consumer,
    daemon: Option<Daemon>,
    /// The HTTP port of `/`, `/healthz`, `/metrics` and the live view.
    pub http: u16,
    pub notify: NotifyLog,
    rtsp: Option<RtspServer>,
    rtsp_port: u16,
    cfg: PathBuf,
    pub log: PathBuf,
    /// Answers expected on each `…/set/result` topic, in order.
    pub expected: std::collections::BTreeMap<String, Vec<steps::Want>>,
    /// The commands of `expected` as they were sent, at once, on each topic.
    pub bursts: std::collections::BTreeMap<String, Vec<Burst>>,
    /// The floods of the last step: their answer topic, where their answers start in its
    /// list, how many, and the cameras whose final state must be the last accepted one's.
    pub floods: Vec<Flood>,
    /// Where fault requests go (`CLEFD_TEST_FAULT_DIR`), and when worker faults were asked
    /// for (clefd gives up after 5 of a bundle in 10 minutes; the rig asks for at most 3).
    faults: PathBuf,
    worker_faults: Vec<Instant>,
    /// The last step must not stop event delivery (a command that used to cut clefd off
    /// the broker, a fault): the check then waits for a new event.
    pub want_events: bool,
    viewers: Vec<(&'static str, TcpStream)>,
    /// Problems seen while doing a step (a viewer refused with seats free...).
    pub noticed: Vec<(&'static str, String)>,
}

impl Rig {
    /// Starts the broker, the subscriber, the RTSP server and the daemon on the model's config.
    /// glibc keeps at most two malloc arenas in the daemon (`CLEFD_TORTURE_ARENAS` to change
    /// it): with its default (8 per core) the memory freed by camera threads that come and
    /// go stays in their arenas and RSS climbs for hundreds of steps while the heap in use
    /// stays flat (docs/reliability.md), which would hide a leak under the tolerance.
    pub fn start(clips: &Clips, model: &Model) -> Rig {
        let broker = Broker::start_persistent();
        let tap = Consumer::start_persistent(broker.port, &format!("torture-{}", broker.port));
        let dir = tempfile::tempdir().unwrap();
        let notify = common::notify_listen(&dir.path().join("notify.sock"));
        let rtsp_port = common::free_port();
        let rtsp = Some(RtspServer::serve(rtsp_port, rtsp_launch()));
        let mut rig = Rig {
            cfg: dir.path().join("clefd.toml"),
            log: dir.path().join("clefd.log"),
            dir,
            broker,
            tap,
            daemon: None,
            http: common::free_port(),
            notify,
            rtsp,
            rtsp_port,
            expected: Default::default(),
            bursts: Default::default(),
            floods: Vec::new(),
            faults: PathBuf::new(),
            worker_faults: Vec::new(),
            want_events: false,
            viewers: Vec::new(),
            noticed: Vec::new(),
        };
        rig.faults = rig.dir.path().join("faults");
        std::fs::create_dir(&rig.faults).unwrap();
        rig.write_config(clips, model);
        let mut cmd = common::clefd();
        cmd.args(["run", "--config", rig.cfg.to_str().unwrap()])
            .env("NOTIFY_SOCKET", rig.dir.path().join("notify.sock"))
            .env("CLEFD_TEST_FAULT_DIR", &rig.faults)
            // As under systemd: with it, the first panic (a fault step) has the standard
            // library parse the binary's debug info for the backtrace and keep it, ~90 MB.
            .env_remove("RUST_BACKTRACE");
        // The daemon limits its malloc arenas itself; CLEFD_TORTURE_ARENAS overrides it.
        match std::env::var("CLEFD_TORTURE_ARENAS") {
            Ok(n) => cmd.env("MALLOC_ARENA_MAX", n),
            Err(_) => cmd.env_remove("MALLOC_ARENA_MAX"),
        };
        rig.daemon = Some(Daemon::spawn(cmd, &rig.log));
        rig
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }

    /// Whether the daemon still runs.
    pub fn running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::running)
    }

    /// The config the model describes.
    fn write_config(&self, clips: &Clips, model: &Model) {
        let mut text = common::base_config(self.dir.path(), &self.broker.url(), DEVICE)
            .replace("[mqtt]\n", "[mqtt]\ncontrol = true\nhome_assistant = true\n")
            .replace("stall_timeout_s = 2.0", "stall_timeout_s = 6.0");
        text += &format!("[http]\nlisten = \"127.0.0.1:{}\"\n", self.http);
        for (name, cam) in &model.cameras {
            let uri = match cam.kind {
                Kind::Pattern(p) => format!("test://{p}"),
                Kind::Looping => format!("file://{}", clips.looping.display()),
                Kind::Ending => format!("file://{}", clips.ending.display()),
                Kind::Damaged => format!("file://{}", clips.damaged.display()),
                Kind::Rtsp => format!("rtsp://127.0.0.1:{}/cam", self.rtsp_port),
            };
            text += &format!("[cameras.{name}]\nuri = \"{uri}\"\nwidth = 320\nfps = {:.1}\n", cam.fps);
            if matches!(cam.kind, Kind::Looping | Kind::Ending | Kind::Damaged) {
                text += "realtime = true\n";
            }
            if cam.kind == Kind::Looping {
                text += "loop = true\n";
            }
            if cam.bundle == Bundle::Context {
                text += &format!("bundle = \"{}\"\n", common::repo().join("engines/context-bias-demo").display());
            }
        }
        std::fs::write(&self.cfg, text).unwrap();
    }

    /// Publishes commands on a camera's (or the device's) `set`, one client for them all
    /// (a storm arrives as fast as the broker passes it on); a single command goes as one
    /// message, whatever its bytes.
    fn send(&mut self, commands: &[steps::Command]) {
        for group in commands.chunk_by(|a, b| a.camera == b.camera) {
            let topic = match group[0].camera {
                Some(c) => format!("clefd/{DEVICE}/{c}/set"),
                None => format!("clefd/{DEVICE}/set"),
            };
            let mode = if group.len() == 1 { "-s" } else { "-l" };
            let mut child = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &self.broker.port.to_string(), "-q", "1", "-t", &topic, mode])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("mosquitto_pub (mosquitto-clients) runs");
            let mut stdin = child.stdin.take().unwrap();
            for c in group {
                stdin.write_all(&c.payload).unwrap();
                if group.len() > 1 {
                    stdin.write_all(b"\n").unwrap();
                }
            }
            drop(stdin);
            assert!(child.wait().unwrap().success(), "mosquitto_pub {topic}");
            let answers = self.expected.entry(format!("{topic}/result")).or_default();
            let burst = Burst { first: answers.len(), n: group.len() };
            self.bursts.entry(format!("{topic}/result")).or_default().push(burst);
            if group.iter().any(|c| c.flood) {
                let cameras = match group[0].camera {
                    Some(c) => vec![c],
                    None => Vec::new(),
                };
                let (topic, first, n) = (format!("{topic}/result"), answers.len(), group.len());
                self.floods.push(Flood { topic, first, n, cameras });
            }
            answers.extend(group.iter().map(|c| c.want));
        }
    }

    /// Asks for a fault (a file in `CLEFD_TEST_FAULT_DIR`) and waits until `metric` grows
    /// (a lane or worker looks at most once a second); a fault not taken, or counted more
    /// than once, is noticed.
    fn fault(&mut self, file: &str, metric: &'static str) {
        let before = super::invariants::metric_sum(self.http, metric);
        std::fs::write(self.faults.join(file), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut now = before;
        while now <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            now = super::invariants::metric_sum(self.http, metric);
        }
        if now != before + 1.0 {
            let taken = !self.faults.join(file).exists();
            self.noticed
                .push(("a fault is counted once", format!("{file}: {metric} {before} -> {now}, taken: {taken}")));
        }
        let _ = std::fs::remove_file(self.faults.join(file));
    }

    /// Does `step`, whose effect `model` (already updated) describes.
    pub fn execute(&mut self, clips: &Clips, step: &Step, commands: &[steps::Command], model: &Model) {
        self.floods.clear();
        self.want_events = matches!(
            step,
            Step::Oversize { .. }
                | Step::Unreadable { .. }
                | Step::Flood { .. }
                | Step::LanePanic
                | Step::WorkerFault { .. }
        );
        match step {
            Step::Add { .. } | Step::Remove { .. } | Step::Change { .. } => self.reload(clips, model),
            Step::Reset => {
                self.viewers.clear();
                if self.rtsp.is_none() {
                    self.rtsp = Some(RtspServer::serve(self.rtsp_port, rtsp_launch()));
                }
                self.reload(clips, model);
                self.send(commands);
            }
            Step::SourceDown => {
                if let Some(s) = self.rtsp.take() {
                    s.stop();
                }
            }
            Step::SourceUp => self.rtsp = Some(RtspServer::serve(self.rtsp_port, rtsp_launch())),
            Step::BrokerRestart { pause_ms } => {
                let before = super::invariants::metric_sum(self.http, "clefd_mqtt_connects_total");
                self.broker.stop();
                std::thread::sleep(Duration::from_millis(*pause_ms));
                self.broker.start_again();
                // Commands are only answered once clefd is subscribed again.
                let deadline = Instant::now() + Duration::from_secs(90);
                while super::invariants::metric_sum(self.http, "clefd_mqtt_connects_total") <= before {
                    if Instant::now() > deadline {
                        self.noticed.push(("clefd reconnects to a restarted broker", "not within 90 s".into()));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                self.wait_for_the_control_link();
            }
            Step::ViewersOpen { name, n } => {
                for _ in 0..*n {
                    let held = self.viewers.iter().filter(|(c, _)| model.cameras.contains_key(c)).count();
                    match open_viewer(self.http, name) {
                        Ok(s) => self.viewers.push((name, s)),
                        Err(answer) if held < 8 => self.noticed.push((
                            "a viewer gets a seat while seats are free",
                            format!("viewer {} of {n} on {name} refused with {held} seats held: {answer}", held + 1),
                        )),
                        Err(_) => {}
                    }
                }
            }
            Step::ViewersClose => self.viewers.clear(),
            Step::LanePanic => self.fault("lane-panic", "clefd_lane_panics_total"),
            Step::WorkerFault { panic } => {
                self.worker_faults.retain(|t| t.elapsed() < Duration::from_secs(600));
                if self.worker_faults.len() >= 3 {
                    eprintln!("torture: (3 worker faults in the last 10 minutes: this one is not asked for)");
                    return;
                }
                self.worker_faults.push(Instant::now());
                let file = if *panic { "worker-panic" } else { "worker-stop" };
                self.fault(file, "clefd_worker_failures_total");
            }
            Step::ViewersVisit { name, n } => {
                let before = self.viewers.len();
                self.execute(clips, &Step::ViewersOpen { name, n: *n }, commands, model);
                std::thread::sleep(Duration::from_secs(1));
                self.viewers.truncate(before);
            }
            _ => self.send(commands),
        }
    }

    /// Waits until clefd's control connection is subscribed again after a broker restart: it
    /// reconnects with a backoff of its own, and `clefd_mqtt_connects_total` counts only the
    /// event publisher's connections (make-test seed 46 on a loaded machine: the command of
    /// the step after a 2 s outage reached the broker before clefd's control subscription
    /// and got no answer). Probes go to `probe/set`, a topic the answers' check does not
    /// read, and are larger than a command may be, so that each is refused on arrival and
    /// none waits in the daemon's command queue.
    fn wait_for_the_control_link(&mut self) {
        let port = self.broker.port.to_string();
        let topic = format!("clefd/{DEVICE}/probe/set");
        let result = format!("{topic}/result");
        let listen = || {
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port, "-t", &result, "-C", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_sub (mosquitto-clients) runs")
        };
        let mut answer = listen();
        let probe = "x".repeat(17 * 1024);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match answer.try_wait() {
                // Only an answer received is the link back; a listener that failed (the
                // broker not up yet) listens again.
                Ok(Some(status)) if status.success() => break,
                Ok(Some(_)) => answer = listen(),
                _ => {}
            }
            if Instant::now() > deadline {
                let _ = answer.kill();
                self.noticed.push(("clefd's control link comes back after a broker restart", "not within 90 s".into()));
                break;
            }
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", &topic, "-m", &probe])
                .status();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = answer.wait();
    }

    fn reload(&mut self, clips: &Clips, model: &Model) {
        self.write_config(clips, model);
        common::signal(self.pid(), "HUP");
    }

    /// SIGTERM; whether it exited 0.
    pub fn stop(&mut self) -> bool {
        self.viewers.clear();
        self.daemon.take().is_some_and(Daemon::stop)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.viewers.clear();
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        if let Some(s) = self.rtsp.take() {
            s.stop();
        }
    }
}

/// Opens `live.mjpeg` on `camera` and reads the answer's head; `Err` with the status line
/// when it is not the MJPEG stream.
pub fn open_viewer(port: u16, camera: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
    write!(s, "GET /cameras/{camera}/live.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    if text.contains("multipart/x-mixed-replace") { Ok(s) } else { Err(text.lines().next().unwrap_or("").to_string()) }
}

/// Whether a new viewer of `camera` gets a frame: the head, then one part.
pub fn viewer_gets_a_frame(port: u16, camera: &str) -> Result<(), String> {
    let mut s = open_viewer(port, camera)?;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
        if seen.windows(9).filter(|w| w == b"--frame\r\n").count() >= 1 && seen.len() > 2000 {
            return Ok(());
        }
    }
    Err(format!("the stream sent {} bytes and no frame", seen.len()))
}

/// RSS (kB), threads and open file descriptors of a process.
pub fn resources(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    (field("VmRSS:"), field("Threads:"), fds)
}

/// Heap figures of a process, for telling a leak from memory the allocator keeps (opt-in,
/// `CLEFD_TORTURE_HEAP=1`: gdb stops the daemon for a moment): glibc's `malloc_stats()`,
/// called through gdb, writes to the daemon's stderr (its log); its last total gives the
/// bytes the heap holds from the system and the bytes in use. With `trim`, `malloc_trim(0)`
/// then hands free pages back (which lowers the RSS of later samples). `(held, in use, RSS
/// now)` in kB.
pub fn heap(pid: u32, log: &std::path::Path, trim: bool) -> Option<(u64, u64, u64)> {
    let trim = if trim { "call (int)malloc_trim(0)" } else { "echo" };
    let done = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "call (void)malloc_stats()", "-ex", trim])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !done.success() {
        return None;
    }
    let text = std::fs::read_to_string(log).ok()?;
    let total = &text[text.rfind("Total (incl. mmap):")?..];
    let field = |name: &str| -> Option<u64> {
        total.lines().find_map(|l| l.trim().strip_prefix(name))?.trim().trim_start_matches('=').trim().parse().ok()
    };
    Some((field("system bytes")? / 1024, field("in use bytes")? / 1024, resources(pid).0))
}
