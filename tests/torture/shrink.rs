//! Running a list of steps against a fresh rig, and shrinking a failing list to a shorter
//! one that fails the same way (greedy delta debugging: drop halves, quarters, ... of the
//! steps while the same invariant still fails; bounded in replays).

use std::time::{Duration, Instant};

use super::invariants::{self, Digest, Violation};
use super::model::Model;
use super::rig::{self, Clips, Rig};
use super::steps::{self, Step};

/// How a run is done.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a check waits for the invariants to hold after a step.
    pub deadline: Duration,
    /// Record every invariant that fails (its first step) and go on, instead of stopping.
    pub keep_going: bool,
    /// Most growth allowed between the first and the last reset: RSS (kB), threads, fds.
    pub tolerance: (u64, u64, u64),
    /// Most growth allowed of the heap in use (kB), compared as RSS is.
    pub heap_tolerance: u64,
}

/// Resources at one reset: step index, RSS kB, threads, fds, heap in use kB (the daemon's
/// `clefd_heap_in_use_bytes`).
pub type Sample = (usize, u64, u64, u64, u64);

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Failures: the step index (0 = start-up, i = after step i) and what failed.
    pub failures: Vec<(usize, Violation)>,
    pub samples: Vec<Sample>,
    /// Steps done (skipped ones not counted) and invariant evaluations passed.
    pub steps_done: usize,
    pub checks: usize,
    /// Distinct events the subscriber received.
    pub events: usize,
    /// Answers to control commands received: accepted, refused by the daemon, busy, too large.
    pub answers: [usize; 4],
    pub elapsed: Duration,
}

impl Outcome {
    /// The first failure, if any.
    pub fn first(&self) -> Option<&(usize, Violation)> {
        self.failures.first()
    }
}

/// Runs `plan` on a fresh daemon.
pub fn run(clips: &Clips, plan: &[Step], opts: &Options) -> Outcome {
    let started = Instant::now();
    let mut model = Model::initial();
    let mut rig = Rig::start(clips, &model);
    let mut digest = Digest::default();
    let mut out = Outcome::default();
    let record = |out: &mut Outcome, at: usize, found: Vec<Violation>| {
        for f in found {
            if !out.failures.iter().any(|(_, g)| g.invariant == f.invariant) {
                eprintln!("torture: after step {at}: {}: {}", f.invariant, f.detail);
                out.failures.push((at, f));
            }
        }
    };
    let found = invariants::check(&mut rig, &mut digest, &model, opts.deadline * 2, &[]);
    out.checks += 1;
    record(&mut out, 0, found);
    for (i, step) in plan.iter().enumerate() {
        if !out.failures.is_empty() && !opts.keep_going {
            break;
        }
        if !rig.running() {
            break;
        }
        let Some(commands) = steps::apply(&mut model, step) else { continue };
        eprintln!("torture: step {}: {step}", i + 1);
        rig.noticed.clear();
        rig.execute(clips, step, &commands, &model);
        let skip: Vec<&str> = out.failures.iter().map(|(_, f)| f.invariant).collect();
        let found = invariants::check(&mut rig, &mut digest, &model, opts.deadline, &skip);
        out.steps_done += 1;
        out.checks += 1;
        let passed = found.is_empty();
        record(&mut out, i + 1, found);
        if *step == Step::Reset && (passed || opts.keep_going) {
            // The steady state: the least of each over 14 s (tokio's blocking threads and
            // GStreamer's linger a few seconds after use). The daemon samples its heap at
            // most every 10 s (`heap::REFRESH`): 14 s read at least one sample taken 10 s
            // or more into the window.
            let (mut rss, mut threads, mut fds, mut in_use) = (u64::MAX, u64::MAX, u64::MAX, u64::MAX);
            for _ in 0..7 {
                std::thread::sleep(Duration::from_secs(2));
                let now = rig::resources(rig.pid());
                (rss, threads, fds) = (rss.min(now.0), threads.min(now.1), fds.min(now.2));
                // A scrape that fails reads as 0: it is no figure.
                let heap = invariants::metric_sum(rig.http, "clefd_heap_in_use_bytes") as u64 / 1024;
                in_use = in_use.min(if heap > 0 { heap } else { u64::MAX });
            }
            let in_use = if in_use == u64::MAX { 0 } else { in_use };
            let (_, metrics) = crate::common::http_get(rig.http, "/metrics");
            let series = metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
            eprintln!(
                "torture: resources after step {}: RSS {rss} kB, heap in use {in_use} kB, {threads} threads, {fds} fds, \
                 {series} metric series",
                i + 1
            );
            // Expected where this process's C library has `mallinfo2` (the daemon runs on
            // the same one): not on JetPack 5's glibc 2.31, nor off glibc.
            if in_use == 0 && clefd::service::heap::in_use_bytes().is_some() {
                let detail = format!("after step {}: no clefd_heap_in_use_bytes on /metrics", i + 1);
                record(&mut out, i + 1, vec![Violation { invariant: "clefd reports its heap in use", detail }]);
            }
            let heap = std::env::var("CLEFD_TORTURE_HEAP").unwrap_or_default();
            if (heap == "1" || heap == "trim")
                && let Some((held, used, now)) = rig::heap(rig.pid(), &rig.log, heap == "trim")
            {
                let trimmed = if heap == "trim" { " after malloc_trim" } else { "" };
                eprintln!(
                    "torture: heap after step {}: {held} kB held from the system, {used} kB in use; \
                     RSS {now} kB{trimmed}",
                    i + 1
                );
            }
            out.samples.push((i + 1, rss, threads, fds, in_use));
        }
    }
    if let Some(found) = growth(&out.samples, opts.tolerance) {
        record(&mut out, found.0, vec![found.1]);
    }
    if let Some(found) = heap_growth(&out.samples, opts.heap_tolerance) {
        record(&mut out, found.0, vec![found.1]);
    }
    digest.drain(&rig);
    out.events = digest.events();
    for a in digest.answers.values().flatten() {
        out.answers[if a.ok {
            0
        } else if a.busy {
            2
        } else if a.too_large {
            3
        } else {
            1
        }] += 1;
    }
    if out.failures.is_empty() && !rig.stop() {
        record(
            &mut out,
            plan.len(),
            vec![Violation { invariant: "SIGTERM stops the daemon with exit 0", detail: invariants::tail(&rig.log) }],
        );
    }
    out.elapsed = started.elapsed();
    out
}

/// Whether resources grew with the steps: threads and fds at the last reset against the
/// first; RSS as the least of the samples of the later half of the resets after the first
/// (the warm-up: ONNX Runtime, GStreamer and the allocator reach their plateau there)
/// against the least of the earlier half, so that one high sample proves nothing and a
/// steady creep shows as the distance between the halves. With two resets (a short run)
/// only threads and fds are compared. The step of the last reset and what grew, if any.
pub fn growth(samples: &[Sample], (rss, threads, fds): (u64, u64, u64)) -> Option<(usize, Violation)> {
    let (&a, &b) = (samples.first()?, samples.last()?);
    let creep = creep(samples, |s| s.1);
    if creep.is_none_or(|(early, late)| late <= early + rss) && b.2 <= a.2 + threads && b.3 <= a.3 + fds {
        return None;
    }
    let detail = format!(
        "after step {}: RSS {} kB, {} threads, {} fds; after step {}: RSS {} kB, {} threads, {} fds; least RSS of \
         the earlier and the later resets after the first {creep:?} kB (tolerance +{rss} kB, +{threads}, +{fds})",
        a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3
    );
    Some((b.0, Violation { invariant: "RSS, threads and fds do not grow with steps", detail }))
}

/// The least of a figure over the earlier half of the resets after the first, and over the
/// later half (the first is the warm-up's: ONNX Runtime, GStreamer and the allocator reach
/// their plateau there); `None` with fewer than two resets after the first.
fn creep(samples: &[Sample], figure: impl Fn(&Sample) -> u64) -> Option<(u64, u64)> {
    let after = samples.get(1..)?;
    let half = after.len() / 2;
    let least = |s: &[Sample]| s.iter().map(&figure).min().unwrap_or(0);
    (half > 0).then(|| (least(&after[..half]), least(&after[half..])))
}

/// Whether the heap in use grew with the steps, by the rule RSS follows ([`growth`]), with a
/// tolerance far below RSS's: the heap in use is not what the allocator keeps (the arenas'
/// plateau), only what is allocated, so it moves by a few MB where RSS moves by tens
/// (docs/reliability.md). The step of the last reset and how it grew, if it did.
pub fn heap_growth(samples: &[Sample], tolerance: u64) -> Option<(usize, Violation)> {
    let (early, late) = creep(samples, |s| s.4)?;
    if late <= early + tolerance {
        return None;
    }
    let all: Vec<(usize, u64)> = samples.iter().map(|s| (s.0, s.4)).collect();
    let detail = format!(
        "least heap in use of the earlier and the later resets after the first {early} kB, {late} kB \
         (tolerance +{tolerance} kB); (step, kB) at each reset {all:?}"
    );
    Some((samples.last()?.0, Violation { invariant: "the heap in use does not grow with steps", detail }))
}

/// The shortest sub-list of `plan` found (within `max_replays` runs) that still fails
/// `invariant`, as indices into `plan`.
pub fn shrink(
    clips: &Clips,
    plan: &[Step],
    failed_at: usize,
    invariant: &str,
    opts: &Options,
    max_replays: usize,
) -> Vec<usize> {
    let mut best: Vec<usize> = (0..failed_at.min(plan.len())).collect();
    let mut replays = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    while replays < max_replays && !best.is_empty() {
        let mut start = 0;
        let mut shrunk = false;
        while start < best.len() && replays < max_replays {
            let mut candidate = best.clone();
            candidate.drain(start..(start + chunk).min(best.len()));
            replays += 1;
            let steps: Vec<Step> = candidate.iter().map(|&i| plan[i].clone()).collect();
            let outcome = run(clips, &steps, opts);
            match outcome.failures.iter().find(|(_, f)| f.invariant == invariant) {
                Some((at, _)) => {
                    eprintln!("torture: shrink: {} steps still fail", candidate.len().min(*at));
                    candidate.truncate(*at);
                    best = candidate;
                    shrunk = true;
                }
                None => start += chunk,
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    best
}
