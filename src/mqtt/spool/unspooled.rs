//! Numbers handed out that no spool holds: events the disk refused in this run, and
//! numbers a kill took between making `seq` durable and spooling the events. Either way
//! consumers see a gap in `seq`; it is counted once, and a `.lost` file (with the commit
//! file moved past it) keeps the next start from counting it again.

use std::ops::Range;

use super::Spool;
use crate::mqtt::state_file;

impl Spool {
    /// The events of `seqs` will never be in the spool (the disk refused them; the caller
    /// counted them lost). Only numbers after the last spooled event need noting: a hole
    /// between two spooled events is passed over at the next start, not counted.
    pub fn unspooled(&mut self, seqs: Range<u64>) {
        self.acked_above.extend(seqs.start.max(self.low_water)..seqs.end);
        let after_last = self.last_written.map_or(0, |l| l + 1);
        // A run that an event spooled since has closed is such a hole now.
        let run = self.unnoted.filter(|(from, _)| *from >= after_last);
        let from = seqs.start.max(after_last);
        if from >= seqs.end {
            self.unnoted = run;
            return;
        }
        self.unnoted = Some(run.map_or((from, seqs.end), |(f, t)| (f.min(from), t.max(seqs.end))));
    }

    /// Writes the `.lost` file for the numbers after the last spooled event that the disk
    /// refused, and moves the durable watermark past them; kept for the next sync while
    /// the disk refuses that too.
    pub(super) fn note_unspooled(&mut self) {
        let Some((from, to)) = self.unnoted else { return };
        if self.last_written.is_some_and(|l| l >= from) {
            self.unnoted = None;
            return;
        }
        if self.note_lost(from, to) {
            self.durable_next = self.durable_next.max(to);
            self.commit_dirty = true;
            self.unnoted = None;
        }
    }

    /// A `FROM-TO.lost` file: these numbers were counted lost. False when it cannot be
    /// written (a restart then counts them again).
    fn note_lost(&mut self, from: u64, to: u64) -> bool {
        let stone = self.dir.join(format!("{from:020}-{to:020}.lost"));
        match state_file::write(&stone, format!("{from} {to}\n").as_bytes()) {
            Ok(()) => {
                self.tombstones.push((to, stone));
                true
            }
            Err(e) => {
                tracing::debug!(file = %stone.display(), error = %e, "cannot note lost events yet");
                false
            }
        }
    }

    /// Numbers from [`Spool::next_seq`] up to `next` were handed out (the sequence file
    /// says so) but never reached the spool: clefd was killed between making the numbers
    /// durable and appending their events. They are counted lost, once (a `.lost` file
    /// remembers them and the commit file moves past them), so the gap a consumer sees in
    /// `seq` is counted; numbers an earlier run noted as lost are not counted again.
    /// Without a commit file (a new or cleared spool) nothing is known about what was
    /// delivered, and nothing is counted. Returns how many were counted.
    pub fn count_unspooled(&mut self, next: u64) -> u64 {
        let from = self.next_seq();
        if next <= from || !self.dir.join("acked").exists() {
            return 0;
        }
        // Counted without walking the range: a damaged sequence file can put `next` far
        // ahead, and memory stays bounded by what the spool holds.
        let n = (next - from).saturating_sub(self.acked_above.range(from..next).count() as u64);
        if n > 0 {
            tracing::warn!(
                from,
                to = next - 1,
                events = n,
                "events were numbered but not spooled when clefd last stopped (killed?): counted as lost"
            );
            self.lost += n;
            // Nothing holds these numbers: the commit file moves past them (below), and
            // new events are numbered from `next` on, so none needs remembering one by one.
            if !self.note_lost(from, next) {
                tracing::warn!(spool = %self.dir.display(), "cannot note lost events: a restart counts them again");
            }
        }
        self.durable_next = next;
        self.advance_to(self.low_water);
        if let Err(e) = self.write_commit() {
            tracing::warn!(spool = %self.dir.display(), error = %e, "cannot write the spool's commit file");
        }
        n
    }
}
