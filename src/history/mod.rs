//! The day at a glance: the events this device published, kept on the device (`[history]`)
//! for the history page and `/api/events`, so a person can see what a camera saw today and
//! a consumer that was away longer than its broker session can catch up.
//!
//! Events are handed over where the publisher numbers them (so they carry the `seq`
//! consumers got), once the spool has them on disk, through a bounded channel to one
//! writer thread that batches them into an SQLite file under `state_dir`, pruned by age
//! and size. The frame path never waits
//! for the disk: a full channel drops the event and counts it, and a broken disk degrades
//! the history alone (logged once, counted).

pub mod query;
mod row;
pub mod store;
mod writer;

use std::ops::Range;
use std::sync::OnceLock;

pub use row::Row;
pub use store::{HistoryError, Store};
pub use writer::{History, HistoryStats};

use crate::config::HistorySettings;
use crate::events::EmotionEvent;

/// The daemon's history, once `[history]` is on: one per process, so the publisher and the
/// HTTP routes reach it without threading a handle through every layer between them.
static INSTALLED: OnceLock<History> = OnceLock::new();

/// Starts the writer for `settings` and makes it the process's history. A second call
/// keeps the first history (a reload cannot change `[history]`: it needs a restart).
pub fn install(settings: &HistorySettings) -> &'static History {
    INSTALLED.get_or_init(|| History::start(settings.clone()))
}

/// The process's history, when `[history]` is on.
pub fn installed() -> Option<&'static History> {
    INSTALLED.get()
}

/// One spool group's events, held until the spool has them on disk: an event whose fsync
/// failed is rolled back and never sent, so it must not be served by `/api/events` either;
/// every other event of the group is sent, so it is served, whatever else the sync met.
#[derive(Default)]
pub struct Pending(Vec<Row>);

impl Pending {
    /// Keeps `event` (published as `payload`) for [`Pending::hand_over`]; nothing when the
    /// history is off.
    pub fn add(&mut self, event: &EmotionEvent, payload: &[u8]) {
        if INSTALLED.get().is_some() {
            self.0.push(Row::from_event(event, payload));
        }
    }

    /// Hands the group to the history, once it is synced. Never blocks (a writer behind drops the event and counts it).
    pub fn hand_over(self) {
        self.hand_over_except(&[]);
    }

    /// Hands the group to the history but for the events numbered in `rolled_back` (those
    /// the spool's sync gave up: never sent). Never blocks.
    pub fn hand_over_except(self, rolled_back: &[Range<u64>]) {
        if let Some(history) = INSTALLED.get() {
            for row in self.kept(rolled_back) {
                history.record_row(row);
            }
        }
    }

    /// The rows not numbered in `rolled_back`.
    fn kept(self, rolled_back: &[Range<u64>]) -> impl Iterator<Item = Row> {
        self.0.into_iter().filter(move |row| !rolled_back.iter().any(|r| r.contains(&row.seq)))
    }
}

/// Writes what the history was handed so far, waiting at most `wait` (at shutdown). Blocks.
pub fn flush(wait: std::time::Duration) {
    if let Some(history) = INSTALLED.get()
        && !history.flush(wait)
    {
        tracing::warn!("the history could not write its last events before exit");
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn a_group_hands_over_all_but_what_its_sync_rolled_back() {
        let mut e = EmotionEvent::for_test("door", 1, EventType::Update, "Happy", 0.9);
        let rows = (1..=6)
            .map(|seq| {
                e.seq = seq;
                Row::from_event(&e, b"{}")
            })
            .collect();
        let kept: Vec<u64> = Pending(rows).kept(&[2..4, 6..7]).map(|r| r.seq).collect();
        assert_eq!(kept, [1, 4, 5]);
    }
}
