//! `clefd watch`: the events a consumer receives, one readable line each, logged in to
//! the broker the way the daemon is (or with explicit flags).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clefd::mqtt::{BrokerUrl, TlsFiles};

use super::subscriber::WatchOptions;

/// `clefd watch`'s flags.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Broker URL [default: the config's mqtt.url with --config, else mqtt://127.0.0.1:1883].
    #[arg(long)]
    mqtt: Option<String>,
    /// Topic prefix [default: the config's mqtt.prefix with --config, else clefd].
    #[arg(long)]
    prefix: Option<String>,
    /// The daemon's config file: broker, prefix, user name, password file and TLS files
    /// come from it (flags given here win).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// User name for the broker.
    #[arg(long)]
    username: Option<String>,
    /// File holding the broker password (its first line).
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
    /// `mqtts://`: the CA certificate (PEM) that signed the broker's certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Exit when this device goes offline (clean shutdown).
    #[arg(long)]
    until_offline: Option<String>,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Ground truth of a rendered clip (the kit's `.truth.csv`): score each event of
    /// --truth-camera against it and print a tally at the end.
    #[arg(long, requires = "truth_camera")]
    truth: Option<PathBuf>,
    /// The camera that plays the clip --truth describes.
    #[arg(long)]
    truth_camera: Option<String>,
}

/// The first line of a password file.
fn read_password(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the password file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// `clefd watch`.
pub fn watch(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let from_config = match &a.config {
        Some(path) => match clefd::config::load(path) {
            Ok(settings) => Some(super::options::publisher_config(&settings)?),
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("{p}");
                }
                return Ok(ExitCode::from(super::EXIT_CONFIG));
            }
        },
        None => None,
    };
    let url = match (&a.mqtt, &from_config) {
        (Some(u), _) => BrokerUrl::parse(u).map_err(anyhow::Error::msg)?,
        (None, Some(c)) => c.url.clone(),
        (None, None) => BrokerUrl::parse("mqtt://127.0.0.1:1883").map_err(anyhow::Error::msg)?,
    };
    let prefix = a.prefix.or_else(|| from_config.as_ref().map(|c| c.prefix.clone())).unwrap_or_else(|| "clefd".into());
    let credentials = match (&a.username, &a.password_file) {
        (Some(user), Some(file)) => Some((user.clone(), read_password(file)?)),
        (Some(user), None) => Some((user.clone(), String::new())),
        (None, _) => from_config.as_ref().and_then(|c| c.credentials.clone()),
    };
    let tls = match &a.ca_file {
        Some(p) => Some(TlsFiles {
            ca: std::fs::read(p).with_context(|| format!("reading the CA {}", p.display()))?,
            client: None,
        }),
        None => from_config.as_ref().and_then(|c| c.tls.clone()),
    };
    let truth = match a.truth.zip(a.truth_camera) {
        Some((path, camera)) => Some((camera, clefd::eval::ClipTruth::read(&path)?)),
        None => None,
    };
    let opts = WatchOptions {
        url,
        prefix,
        until_offline: a.until_offline,
        count: a.count,
        timeout: a.timeout.map(Duration::from_secs_f64),
        truth,
        credentials,
        tls,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = std::io::stdout();
    rt.block_on(super::subscriber::watch(opts, &mut out))?;
    Ok(ExitCode::SUCCESS)
}
