//! Inference lanes with the real models: batches that take different times come back in
//! the order they went in, with the same results one lane alone gives.

mod common;

use std::sync::Arc;

use clefd::engine::Bundle;
use clefd::engine::runtime::{self, SessionOptions};
use clefd::image::RgbImage;
use clefd::pipeline::analyze::Analyzer;
use clefd::pipeline::lanes::LanePool;
use common::synth::{ClipSpec, Sprite};

fn analyzers(n: usize) -> Vec<Analyzer> {
    runtime::init(None).expect("ONNX Runtime (run scripts/setup.sh)");
    let opts = SessionOptions { threads: 1, ..SessionOptions::default() };
    (0..n).map(|_| Analyzer::new(Bundle::load(&common::demo_bundle(), &opts).expect("demo bundle"), 16)).collect()
}

/// Pictures that cost different amounts: a blank one (detection only) and the astronaut
/// at a few places (detection and classification).
fn pictures() -> Vec<Arc<RgbImage>> {
    let spec = ClipSpec {
        width: 640,
        height: 480,
        fps: 30,
        frames: 8,
        sprites: vec![Sprite {
            image: common::astronaut(),
            size: (360, 360),
            from: (40.0, 60.0),
            to: (240.0, 60.0),
            round_trips: 1.0,
        }],
    };
    let mut out: Vec<_> = (0..4).map(|i| Arc::new(common::synth::frame(&spec, i * 2))).collect();
    out.push(Arc::new(RgbImage { data: vec![0; 640 * 480 * 3], width: 640, height: 480 }));
    out
}

/// Batch `i` holds `1 + i % 3` pictures, every frame tagged with `i`.
fn batch(i: usize, pictures: &[Arc<RgbImage>]) -> Vec<(usize, Arc<RgbImage>)> {
    (0..1 + i % 3).map(|k| (i, pictures[(i * 7 + k) % pictures.len()].clone())).collect()
}

/// Runs 40 batches through `lanes` lanes, keeping every lane busy (a lane that finishes
/// ahead of an older batch takes the next one at once); returns, per batch in the order
/// they were handed back, its tag and each frame's scores.
fn run(lanes: usize) -> Vec<(usize, Vec<Vec<Vec<f32>>>)> {
    let pictures = pictures();
    let mut pool = LanePool::start("test", analyzers(lanes), 16, Arc::new(|| {})).unwrap();
    assert_eq!(pool.lanes(), lanes);
    let (mut submitted, mut out) = (0, Vec::new());
    while out.len() < 40 {
        while submitted < 40 && pool.has_free_lane() {
            pool.submit(batch(submitted, &pictures));
            submitted += 1;
        }
        assert!(pool.in_flight() <= 2 * lanes, "batches held for ordering are bounded");
        let Some(done) = pool.try_finished() else {
            assert!(pool.wait_any(), "lanes alive");
            continue;
        };
        let tag = done.frames[0].0;
        assert!(done.frames.iter().all(|(t, _)| *t == tag));
        let (faces, _) = done.result.expect("inference runs");
        assert_eq!(faces.len(), done.frames.len(), "one result per frame");
        out.push((tag, faces.iter().map(|f| f.iter().map(|a| a.scores.clone()).collect()).collect()));
    }
    assert!(pool.wait_finished().is_none(), "nothing left in flight");
    out
}

#[test]
fn three_lanes_keep_order_and_agree_with_one() {
    let one = run(1);
    let three = run(3);
    let tags: Vec<usize> = three.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, (0..40).collect::<Vec<_>>(), "batches come back in submission order");
    assert!(three.iter().any(|(_, frames)| frames.iter().any(|f| !f.is_empty())), "faces were found");
    assert!(three.iter().any(|(_, frames)| frames.iter().any(Vec::is_empty)), "the blank picture has none");
    for ((_, a), (_, b)) in one.iter().zip(&three) {
        assert_eq!(a.len(), b.len());
        for (fa, fb) in a.iter().zip(b) {
            assert_eq!(fa.len(), fb.len(), "same faces");
            for (sa, sb) in fa.iter().zip(fb) {
                assert!(sa.iter().zip(sb).all(|(x, y)| (x - y).abs() < 1e-5), "same scores: {sa:?} vs {sb:?}");
            }
        }
    }
}
