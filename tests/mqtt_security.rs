//! TLS with a CA made in the test (openssl), a wrong CA, and a wrong password: events
//! arrive over TLS; the failures are clear errors, retried with backoff, never a crash.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Consumer, Daemon};

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(st.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=clefd test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=some other CA",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    for f in ["server.key", "server.pem", "ca.pem"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// mosquitto with a plain listener (for the test's consumer) and a second one that is
/// TLS or password-protected.
struct SecureBroker {
    plain: u16,
    secure: u16,
    child: Child,
}

impl SecureBroker {
    fn start(dir: &Path, secure_listener: &str) -> SecureBroker {
        let (plain, secure) = (common::free_port(), common::free_port());
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("per_listener_settings true\nlistener {plain} 127.0.0.1\nallow_anonymous true\nlistener {secure} 127.0.0.1\n{secure_listener}\n")).unwrap();
        let child =
            Command::new("mosquitto").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", secure)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", plain)).is_err()
        {
            assert!(std::time::Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        SecureBroker { plain, secure, child }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One looping camera, reconnections at most a second apart, and what `mqtt` sets.
fn config(dir: &Path, url: &str, mqtt: impl FnOnce(&mut common::config::Config)) -> std::path::PathBuf {
    let clip = dir.join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    common::TestConfig::new(dir, url, "secure")
        .with(|c| c.mqtt.reconnect_max_s = 1.0)
        .with(mqtt)
        .looping_file("cam", &clip)
        .write()
}

#[test]
fn events_arrive_over_tls_and_a_wrong_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let d = dir.path().display();
    let broker = SecureBroker::start(
        dir.path(),
        &format!("allow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key"),
    );
    let consumer = Consumer::start(broker.plain);
    let url = format!("mqtts://127.0.0.1:{}", broker.secure);

    let cfg = config(dir.path(), &url, |c| c.mqtt.ca_file = Some(dir.path().join("ca.pem")));
    let daemon = Daemon::start(&cfg, &dir.path().join("good.log"));
    consumer.wait_for("an event over TLS", Duration::from_secs(30), |m| {
        m.iter().any(|x| x.topic == "clefd/secure/cam/emotion")
    });
    // `clefd watch` reads over TLS too: with the CA given, and with the daemon's config.
    let ca = format!("{d}/ca.pem");
    let watched =
        common::run_clefd(&["watch", "--mqtt", &url, "--ca-file", &ca, "--count", "1", "--timeout", "60"], &[]);
    let out = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.status.success() && out.contains("cam"), "{out}{}", String::from_utf8_lossy(&watched.stderr));
    let watched =
        common::run_clefd(&["watch", "--config", cfg.to_str().unwrap(), "--count", "1", "--timeout", "60"], &[]);
    assert!(watched.status.success(), "{}", String::from_utf8_lossy(&watched.stderr));
    let plain = common::run_clefd(&["watch", "--mqtt", &url, "--timeout", "30"], &[]);
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("give the CA"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let wrong =
        common::run_clefd(&["watch", "--mqtt", &url, "--ca-file", &format!("{d}/other.pem"), "--timeout", "30"], &[]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && err.contains("TLS"), "a TLS failure ends watch with the reason: {err}");
    assert!(daemon.stop());

    let http = common::free_port();
    let cfg = config(dir.path(), &url, |c| {
        c.mqtt.ca_file = Some(dir.path().join("other.pem"));
        c.http.listen = format!("127.0.0.1:{http}");
    });
    let log = dir.path().join("bad.log");
    let daemon = Daemon::start(&cfg, &log);
    common::wait_log(&log, "MQTT broker unreachable", 1);
    let tls = "clefd_mqtt_connect_failures_total{reason=\"tls\"}";
    common::wait_metric(http, tls, "TLS failures, retried", Duration::from_secs(60), |n| n >= 2.0);
    assert!(daemon.stop(), "a TLS failure is not a crash");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TLS failed") && text.contains("check mqtt.ca_file"), "{text}");
    assert!(text.contains(&format!("broker=mqtts://127.0.0.1:{}", broker.secure)), "names the broker: {text}");
    assert_eq!(text.matches("MQTT broker unreachable").count(), 1, "retried, and said once: {text}");
    assert!(text.contains("retry_in_ms=1000"), "a TLS failure is retried at the cap: {text}");
}

#[test]
fn a_wrong_password_is_reported_and_retried() {
    wrong_password("3.1.1");
}

#[test]
fn a_wrong_password_is_reported_and_retried_over_mqtt_5() {
    wrong_password("5");
}

fn wrong_password(protocol: &str) {
    let login = |password_file: std::path::PathBuf| {
        move |c: &mut common::config::Config| {
            c.mqtt.protocol = protocol.into();
            c.mqtt.username = Some("clefd".into());
            c.mqtt.password_file = Some(password_file);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["clefd", "right-password"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let broker = SecureBroker::start(dir.path(), &format!("allow_anonymous false\npassword_file {}", pw.display()));
    std::fs::write(dir.path().join("secret"), "wrong-password\n").unwrap();
    let url = format!("mqtt://127.0.0.1:{}", broker.secure);
    let http = common::free_port();
    let cfg = config(dir.path(), &url, |c| {
        login(dir.path().join("secret"))(c);
        c.http.listen = format!("127.0.0.1:{http}");
    });
    let log = dir.path().join("pw.log");
    let daemon = Daemon::start(&cfg, &log);
    common::wait_log(&log, "MQTT broker unreachable", 1);
    let refused = "clefd_mqtt_connect_failures_total{reason=\"credentials\"}";
    common::wait_metric(http, refused, "refused logins, retried", Duration::from_secs(60), |n| n >= 2.0);
    assert!(daemon.stop());
    // `clefd watch` with the same wrong password says so and stops instead of retrying.
    let watched = common::run_clefd(&["watch", "--config", cfg.to_str().unwrap(), "--timeout", "30"], &[]);
    let err = String::from_utf8_lossy(&watched.stderr);
    assert!(!watched.status.success() && err.contains("refused our credentials"), "{err}");
    std::fs::write(dir.path().join("right"), "right-password\n").unwrap();
    let right = dir.path().join("right");
    let daemon = Daemon::start(&config(dir.path(), &url, login(right.clone())), &dir.path().join("right.log"));
    let args = ["watch", "--mqtt", &url, "--username", "clefd", "--password-file", right.to_str().unwrap()];
    let watched = common::run_clefd(&[&args[..], &["--count", "1", "--timeout", "60"]].concat(), &[]);
    assert!(watched.status.success(), "watch logs in: {}", String::from_utf8_lossy(&watched.stderr));
    assert!(String::from_utf8_lossy(&watched.stdout).contains("cam"));
    assert!(daemon.stop());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the broker refused our credentials (check mqtt.username and mqtt.password_file)"), "{text}");
    assert!(text.contains(&format!("broker=mqtt://127.0.0.1:{}", broker.secure)), "{text}");
    assert!(!text.contains("wrong-password"), "the password never appears in logs");
    assert_eq!(text.matches("MQTT broker unreachable").count(), 1, "retried, and said once: {text}");
    assert!(text.contains("retry_in_ms=1000"), "refused credentials are retried at the cap: {text}");
}
