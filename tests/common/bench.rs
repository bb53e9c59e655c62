//! What a daemon test that plays the astronaut starts from: a broker on a free port, a
//! consumer subscribed to everything on it, a folder with the clip in it, and a free port
//! for the daemon's HTTP side.

use std::path::PathBuf;

use super::{Broker, Consumer};

/// The test's world. Fields drop in order (after the daemon, which a test starts later):
/// the folder before the consumer, the broker last.
pub struct Bench {
    pub port: u16,
    pub clip: PathBuf,
    pub dir: tempfile::TempDir,
    pub consumer: Consumer,
    pub broker: Broker,
}

impl Bench {
    /// A fresh world whose clip, `dir/name`, is the astronaut for `seconds` at `fps`.
    pub fn with_astronaut(name: &str, seconds: f32, fps: u32) -> Bench {
        let broker = Broker::start();
        let consumer = Consumer::start(broker.port);
        let dir = tempfile::tempdir().expect("a temporary folder");
        let clip = dir.path().join(name);
        super::astronaut_clip(&clip, seconds, fps);
        Bench { port: super::free_port(), clip, dir, consumer, broker }
    }
}
