//! A real mosquitto for one test, on a free loopback port, stopped on drop.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A mosquitto broker for one test; stopped on drop.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    persistent: bool,
    /// Moved once to another port because the first was taken.
    moved: bool,
    /// Has listened once: from then on it stays on its port.
    started: bool,
    /// The port of the central broker this one bridges to, if any.
    bridge_to: Option<u16>,
    /// More mosquitto.conf lines (limits a test imposes).
    extra: String,
}

impl Broker {
    /// Starts mosquitto on a free loopback port and waits until it accepts connections.
    pub fn start() -> Broker {
        Broker::launch(false)
    }

    /// Like [`Broker::start`], but sessions and queued QoS 1 messages survive
    /// [`Broker::stop`] / [`Broker::start_again`] (mosquitto persistence).
    pub fn start_persistent() -> Broker {
        Broker::launch(true)
    }

    /// A local broker as fleets deploy one beside clefd: persistent, bridging `clefd/#`
    /// to the central broker on loopback port `central` at QoS 1 over MQTT 5, with a
    /// persistent bridge session (`cleansession false`), so what arrives while the
    /// central broker or the link is down waits here and follows when it is back.
    pub fn start_bridged(central: u16) -> Broker {
        Broker::launch_with(true, Some(central), "")
    }

    /// Like [`Broker::start`], with more lines in its mosquitto.conf (`max_packet_size 300`).
    pub fn start_with(extra: &str) -> Broker {
        Broker::launch_with(false, None, extra)
    }

    fn launch(persistent: bool) -> Broker {
        Broker::launch_with(persistent, None, "")
    }

    fn launch_with(persistent: bool, bridge_to: Option<u16>, extra: &str) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        if persistent {
            // mosquitto drops root privileges: let it write its database here.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777));
        }
        let extra = extra.to_string();
        let mut b =
            Broker { port: free_port(), child: None, dir, persistent, moved: false, started: false, bridge_to, extra };
        b.spawn();
        b
    }

    /// mosquitto's config for the current port.
    fn write_conf(&self) -> std::path::PathBuf {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut text = format!("listener {} 127.0.0.1\nallow_anonymous true\n", self.port);
        if self.persistent {
            let dir = self.dir.path().display();
            text += &format!("persistence true\npersistence_location {dir}/\nautosave_interval 1\n");
        } else {
            text += "persistence false\n";
        }
        if let Some(central) = self.bridge_to {
            text += &format!(
                "max_queued_messages 100000\n\
                 connection central\n\
                 address 127.0.0.1:{central}\n\
                 topic clefd/# out 1\n\
                 bridge_protocol_version mqttv50\n\
                 cleansession false\n\
                 remote_clientid clefd-bridge-{port}\n\
                 restart_timeout 1 2\n\
                 keepalive_interval 5\n",
                port = self.port
            );
        }
        text += &self.extra;
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        conf
    }

    fn spawn(&mut self) {
        let conf = self.write_conf();
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            // Another test took the port between free_port() and mosquitto's bind: our
            // mosquitto exits at once. Move to a new port (a first start only: clients
            // of a restarted broker expect it where it was).
            if let Ok(Some(_)) = child.try_wait() {
                assert!(!self.started && !self.moved, "mosquitto could not listen on port {}", self.port);
                self.port = free_port();
                self.moved = true;
                return self.spawn();
            }
            assert!(Instant::now() < deadline, "mosquitto did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        self.started = true;
    }

    /// Stops the broker cleanly (SIGTERM: a persistent broker saves its state).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// Starts it again after [`Broker::stop`], on the same port.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts it again after [`Broker::stop`], on the same port, with `extra` as its
    /// extra mosquitto.conf lines instead of those it had.
    pub fn start_again_with(&mut self, extra: &str) {
        self.extra = extra.to_string();
        self.spawn();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
