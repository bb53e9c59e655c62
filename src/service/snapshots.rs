//! Where snapshots go in the daemon (`[snapshots]`): a retained message per camera on
//! `{prefix}/{device}/{camera}/snapshot`, a bounded folder of files, or both; and the
//! reference each track's `new` event carries to them. Disk trouble is logged and counted,
//! never fatal: the event goes out without its file. The files are encoded and written by a
//! thread of its own, never by the inference thread that cropped the face: it takes the
//! crops from a short queue (a picture that finds the queue full is dropped and counted,
//! so a slow encode or a slow or hung folder never holds up analysis), encodes each one
//! (unless it went to MQTT too, which needs its JPEG before its event is published, so it
//! comes encoded), trims the earlier runs' pictures once at start,
//! and removes its own oldest picture beyond the limit (one unlink per picture, before the
//! new one appears, so the folder never holds more than its limit). The end of a run
//! closes it explicitly ([`SnapshotPlaces::close`]): the queued pictures are written for a
//! bounded time and the thread is joined.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::events::SnapshotRef;
use crate::mqtt::Topics;
use crate::pipeline::snapshot::{Crop, Snapshot};

/// Pictures waiting for the writer at most; more are dropped (and counted).
pub const QUEUE: usize = 16;

/// How long the end of a run waits for the pictures still queued to be written.
const FLUSH: Duration = Duration::from_secs(5);

/// One picture for the writer: its file name's stem and the picture.
type Job = (String, Picture);

/// A picture as the writer gets it: encoded already (it went to MQTT too), or the face's
/// pixels, which the writer encodes.
enum Picture {
    Jpeg(Vec<u8>),
    Crop(Arc<Crop>),
}

/// The destinations, and the references waiting for their `new` events.
#[derive(Debug)]
pub struct SnapshotPlaces {
    /// Publish retained on the camera's snapshot topic.
    pub topics: Option<Topics>,
    /// Write into this folder, keeping the newest `max_files`.
    pub dir: Option<(PathBuf, usize)>,
    pending: Mutex<HashMap<(String, u64), SnapshotRef>>,
    /// Snapshots that could not be written (disk trouble) or encoded.
    pub failed: Arc<AtomicU64>,
    /// Snapshots dropped because the writer was behind (a slow or hung folder).
    pub dropped: AtomicU64,
    /// The writer, until [`SnapshotPlaces::close`].
    writer: Mutex<Option<WriterHandle>>,
}

/// The writer thread as the places see it: its queue, the channel it says it is done on,
/// and the thread to join.
#[derive(Debug)]
struct WriterHandle {
    jobs: SyncSender<Job>,
    done: Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

/// What the writer thread owns.
struct Writer {
    dir: PathBuf,
    keep: usize,
    failed: Arc<AtomicU64>,
    /// The pictures in the folder, oldest first (at most the folder's limit): this run's,
    /// and the earlier runs' that the trim at start kept, so that together they stay
    /// within the limit.
    written: VecDeque<PathBuf>,
    /// Runs before each write: a test's slow or hung disk (`CLEFD_TEST_SNAPSHOT_DELAY_MS`).
    hold: Option<Hold>,
}

/// What a test makes each write wait for.
type Hold = Box<dyn Fn() + Send>;

impl Writer {
    /// Writes `jpeg` as `{stem}.jpg`: aside first, then the oldest pictures beyond the
    /// limit go, then the new one is renamed into place (so the folder never holds more
    /// than its limit, even for a moment).
    fn write(&mut self, stem: &str, jpeg: &[u8]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{stem}.jpg"));
        let tmp = self.dir.join(format!(".{stem}.jpg.tmp"));
        std::fs::write(&tmp, jpeg)?;
        while self.written.len() >= self.keep.max(1) {
            if let Some(old) = self.written.pop_front() {
                let _ = std::fs::remove_file(old);
            }
        }
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(path)
    }

    /// Trims the earlier runs' pictures, then writes what comes until the queue closes.
    fn run(mut self, jobs: Receiver<Job>) {
        match keep_newest(&self.dir, self.keep) {
            Ok(kept) => self.written = kept.into(),
            Err(e) => tracing::debug!(dir = %self.dir.display(), error = %e, "cannot trim the snapshot folder"),
        }
        for (stem, picture) in jobs {
            if let Some(hold) = &self.hold {
                hold();
            }
            let jpeg = match picture {
                Picture::Jpeg(jpeg) => Some(jpeg),
                Picture::Crop(crop) => crop.jpeg(),
            };
            let Some(jpeg) = jpeg else {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("cannot encode a snapshot; its event goes out without it");
                }
                continue;
            };
            match self.write(&stem, &jpeg) {
                Ok(path) => self.written.push_back(path),
                Err(e) => {
                    if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write snapshots (is the folder writable, the disk full?); events go out without them");
                    }
                }
            }
        }
    }
}

impl SnapshotPlaces {
    /// Places for snapshots; nothing pending yet. With a folder, its writer thread starts.
    pub fn new(topics: Option<Topics>, dir: Option<(PathBuf, usize)>) -> SnapshotPlaces {
        let delay = std::env::var("CLEFD_TEST_SNAPSHOT_DELAY_MS").ok().and_then(|v| v.parse().ok());
        let hold = delay.map(|ms| Box::new(move || std::thread::sleep(Duration::from_millis(ms))) as Hold);
        SnapshotPlaces::start(topics, dir, hold)
    }

    fn start(topics: Option<Topics>, dir: Option<(PathBuf, usize)>, hold: Option<Hold>) -> SnapshotPlaces {
        let failed: Arc<AtomicU64> = Arc::default();
        let writer = dir.clone().and_then(|(dir, keep)| {
            let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
            let (done_tx, done) = std::sync::mpsc::channel();
            let w = Writer { dir, keep, failed: failed.clone(), written: VecDeque::new(), hold };
            let spawned = std::thread::Builder::new().name("snapshot-writer".into()).spawn(move || {
                w.run(queue);
                let _ = done_tx.send(());
            });
            match spawned {
                Ok(thread) => Some(WriterHandle { jobs, done, thread }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the thread that writes snapshots; none are written");
                    None
                }
            }
        });
        let writer = Mutex::new(writer);
        SnapshotPlaces { topics, dir, pending: Mutex::default(), failed, dropped: AtomicU64::new(0), writer }
    }

    /// Hands the picture to the writer (when a folder is set; never waits for the encoder
    /// or the disk) and notes where the snapshot goes for its event; whether it should also
    /// go to the publisher (retained on its topic): then, and only then, it is encoded here,
    /// on the caller's thread (it is published ahead of its event, so its JPEG cannot wait
    /// for the writer). A picture the writer has no room for is dropped and counted, and its
    /// event refers to no file (as does one that comes after [`SnapshotPlaces::close`]).
    pub fn place(&self, shot: &mut Snapshot) -> bool {
        if self.topics.is_some() && shot.jpeg.is_empty() {
            shot.jpeg = shot.crop.jpeg().unwrap_or_default();
        }
        let to_mqtt = self.topics.is_some() && !shot.jpeg.is_empty();
        let file = self.dir.as_ref().and_then(|(dir, _)| {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let picture =
                if shot.jpeg.is_empty() { Picture::Crop(shot.crop.clone()) } else { Picture::Jpeg(shot.jpeg.clone()) };
            let sent = writer.as_ref().map(|w| w.jobs.try_send((shot.track_uid.clone(), picture)));
            match sent? {
                Ok(()) => Some(dir.join(format!("{}.jpg", shot.track_uid)).display().to_string()),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(dir = %dir.display(), "snapshots are written more slowly than they come (a slow disk?); the extra ones are dropped");
                    }
                    None
                }
            }
        });
        let topic = self.topics.as_ref().filter(|_| to_mqtt).map(|t| t.snapshot(&shot.camera));
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // One per live track at most: a track's `new` event follows its snapshot.
        if pending.len() > 1024 {
            pending.clear();
        }
        pending.insert((shot.camera.clone(), shot.track_id), SnapshotRef { topic, file });
        to_mqtt
    }

    /// The reference for the `new` event of `camera`'s track `track_id`, if it has one.
    pub fn take(&self, camera: &str, track_id: u64) -> Option<SnapshotRef> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&(camera.to_string(), track_id))
    }
}

impl SnapshotPlaces {
    /// Ends the writer: the pictures still queued are written (for [`FLUSH`] at most: a
    /// hung disk does not hold up the exit) and its thread is joined; whether all were.
    /// Called at the end of a run, off the async runtime (it blocks); later pictures are
    /// not written. Idempotent.
    pub fn close(&self) -> bool {
        let taken = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(WriterHandle { jobs, done, thread }) = taken else {
            return true;
        };
        drop(jobs);
        match done.recv_timeout(FLUSH) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => thread.join().is_ok(),
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "snapshots still queued after {} s (a hung disk?): the run ends without them",
                    FLUSH.as_secs()
                );
                false
            }
        }
    }
}

impl Drop for SnapshotPlaces {
    /// A run that did not close its places still has its queued pictures written (see
    /// [`SnapshotPlaces::close`]).
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes the oldest pictures beyond `keep` (never the newest one); the ones kept,
/// oldest first.
fn keep_newest(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut pictures: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    pictures.sort();
    let gone = pictures.len().saturating_sub(keep.max(1));
    for (_, old) in &pictures[..gone] {
        let _ = std::fs::remove_file(old);
    }
    Ok(pictures.into_iter().skip(gone).map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpgs(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "jpg")).count())
            .unwrap_or(0)
    }

    /// A snapshot that comes encoded (as one that went to MQTT does).
    fn shot(n: u64) -> Snapshot {
        let mut shot = Snapshot::new("cam".into(), n, format!("new-{n}"), face(2, 2));
        shot.jpeg = b"jpeg".to_vec();
        shot
    }

    /// A `width` x `height` gradient.
    fn face(width: u16, height: u16) -> Crop {
        let rgb = (0..usize::from(width) * usize::from(height) * 3).map(|i| (i % 251) as u8).collect();
        Crop::from_rgb(rgb, width, height).unwrap()
    }

    /// A JPEG's size, from its baseline frame header.
    fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
        (u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]), u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]))
    }

    #[test]
    fn a_picture_for_the_folder_is_encoded_by_the_writer_and_never_by_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        // Every write waits until `release` goes: whatever the writer does, it does later.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let hold: Hold = Box::new(move || {
            let _ = gate.lock().unwrap_or_else(|p| p.into_inner()).recv();
        });
        let places = SnapshotPlaces::start(None, Some((dir.path().to_path_buf(), 10)), Some(hold));
        let mut shot = Snapshot::new("cam".into(), 1, "run-cam-1".into(), face(48, 64));
        assert!(!places.place(&mut shot), "not for MQTT");
        assert!(shot.jpeg.is_empty(), "the caller (the inference thread) encoded nothing");
        let file = places.take("cam", 1).and_then(|r| r.file).expect("queued for the folder");
        drop(release);
        assert!(places.close());
        let written = std::fs::read(&file).unwrap();
        assert_eq!(jpeg_size(&written), (48, 64), "the writer encoded the crop");
        assert_eq!(places.failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_picture_for_mqtt_is_encoded_once_and_the_folder_gets_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::new("clefd", "dev");
        let places = SnapshotPlaces::start(Some(topics), Some((dir.path().to_path_buf(), 10)), None);
        let mut shot = Snapshot::new("cam".into(), 2, "run-cam-2".into(), face(40, 30));
        assert!(places.place(&mut shot), "for MQTT");
        assert_eq!(jpeg_size(&shot.jpeg), (40, 30), "encoded before it is published");
        let reference = places.take("cam", 2).unwrap();
        assert_eq!(reference.topic.as_deref(), Some("clefd/dev/cam/snapshot"));
        assert!(places.close());
        assert_eq!(std::fs::read(reference.file.unwrap()).unwrap(), shot.jpeg, "the same JPEG in the folder");
    }

    /// Waits (against a deadline) until `ok` holds.
    fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn earlier_runs_pictures_count_towards_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..3 {
            std::fs::write(dir.path().join(format!("old-{n}.jpg")), b"jpeg").unwrap();
        }
        let places = SnapshotPlaces::new(None, Some((dir.path().to_path_buf(), 2)));
        for n in 0..3 {
            places.place(&mut shot(n));
            // The writer trims first, then writes in order, removing the oldest before the
            // new one appears: once this one is there, the folder holds its limit, earlier
            // runs' pictures included.
            let file = dir.path().join(format!("new-{n}.jpg"));
            wait_until(&format!("new-{n}.jpg written"), || file.exists());
            assert_eq!(jpgs(dir.path()), 2, "the folder holds at most its limit, earlier runs' pictures included");
        }
        assert!(dir.path().join("new-2.jpg").exists() && dir.path().join("new-1.jpg").exists());
    }

    #[test]
    fn a_hung_folder_never_holds_up_the_caller_and_the_extra_pictures_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // Every write waits until `release` goes: a disk that does not answer.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let hold: Hold = Box::new(move || {
            let _ = gate.lock().unwrap_or_else(|p| p.into_inner()).recv();
        });
        let places = SnapshotPlaces::start(None, Some((dir.path().join("snaps"), 100)), Some(hold));
        // Every call returns (none waits for the disk); those beyond the queue (and the
        // one the writer holds, if it took one yet) are dropped and counted.
        let total = 200u64;
        for n in 0..total {
            places.place(&mut shot(n));
        }
        let dropped = places.dropped.load(Ordering::Relaxed);
        let queued = total - dropped;
        assert!((QUEUE as u64..=QUEUE as u64 + 1).contains(&queued), "queued {queued}, dropped {dropped}");
        // Those dropped refer to no file; those queued are written once the disk answers.
        let refs: Vec<_> = (0..total).filter_map(|n| places.take("cam", n)).collect();
        assert_eq!(refs.iter().filter(|r| r.file.is_some()).count() as u64, queued);
        assert_eq!(jpgs(&dir.path().join("snaps")), 0, "nothing written while the disk hangs");
        drop(release);
        assert!(places.close(), "the writer ends once the disk answers");
        assert_eq!(jpgs(&dir.path().join("snaps")) as u64, queued, "the queued pictures are written at the end");
        // Closed: later pictures refer to no file, and closing again is harmless.
        places.place(&mut shot(total));
        assert_eq!(places.take("cam", total).and_then(|r| r.file), None);
        assert!(places.close());
    }

    #[test]
    fn closing_with_a_hung_disk_gives_up_in_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let hold: Hold = Box::new(move || {
            let _ = gate.lock().unwrap_or_else(|p| p.into_inner()).recv();
        });
        let places = SnapshotPlaces::start(None, Some((dir.path().to_path_buf(), 10)), Some(hold));
        places.place(&mut shot(0));
        // The writer never finishes while the disk hangs: close says so rather than wait.
        assert!(!places.close(), "a hung writer is not reported as flushed");
        // The disk answers after all: the abandoned writer finishes on its own.
        drop(release);
        wait_until("the abandoned writer finishes", || jpgs(dir.path()) == 1);
    }
}
