//! Models exported with a fixed batch size still work: faces from all cameras are run in
//! chunks of that size (the last chunk padded), and score as the same weights exported
//! with a dynamic batch dimension do.

mod common;

use clefd::engine::runtime::{self, BatchDim, SessionOptions};
use clefd::engine::{Bundle, Classifiers, ClefPlacement};
use clefd::image::Rect;
use clefd::pipeline::analyze::Analyzer;

/// Appends `v` as a protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a protobuf varint at `*at`.
fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Rewrites every length-delimited field numbered in `fields` with `f`, keeping all other
/// fields byte for byte.
fn map_fields(msg: &[u8], fields: &[u64], f: &mut dyn FnMut(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let (mut out, mut at) = (Vec::with_capacity(msg.len()), 0);
    while at < msg.len() {
        let start = at;
        let tag = varint(msg, &mut at);
        let body = match tag & 7 {
            0 => {
                varint(msg, &mut at);
                None
            }
            1 => {
                at += 8;
                None
            }
            5 => {
                at += 4;
                None
            }
            2 => {
                let len = varint(msg, &mut at) as usize;
                at += len;
                Some(&msg[at - len..at])
            }
            wire => panic!("protobuf wire type {wire} is not used by ONNX"),
        };
        match body {
            Some(body) if fields.contains(&(tag >> 3)) => {
                let new = f(body);
                put_varint(&mut out, tag);
                put_varint(&mut out, new.len() as u64);
                out.extend_from_slice(&new);
            }
            _ => out.extend_from_slice(&msg[start..at]),
        }
    }
    out
}

/// The ONNX model `model` with its symbolic dimension `name` fixed to `n`, in the graph's
/// inputs, outputs and value infos (ModelProto.graph → ValueInfoProto.type →
/// TypeProto.tensor_type → shape → dim: `dim_param` becomes `dim_value`).
fn fix_dimension(model: &[u8], name: &str, n: u64) -> Vec<u8> {
    map_fields(model, &[7], &mut |graph| {
        map_fields(graph, &[11, 12, 13], &mut |value_info| {
            map_fields(value_info, &[2], &mut |type_proto| {
                map_fields(type_proto, &[1], &mut |tensor| {
                    map_fields(tensor, &[2], &mut |shape| {
                        map_fields(shape, &[1], &mut |dim| {
                            let mut param = Vec::new();
                            map_fields(dim, &[2], &mut |p| {
                                param = p.to_vec();
                                p.to_vec()
                            });
                            if param != name.as_bytes() {
                                return dim.to_vec();
                            }
                            let mut fixed = vec![1 << 3];
                            put_varint(&mut fixed, n);
                            fixed
                        })
                    })
                })
            })
        })
    })
}

#[test]
fn a_fixed_batch_export_scores_as_the_dynamic_one() {
    runtime::init(None).expect("ONNX Runtime (run scripts/setup.sh)");
    let opts = SessionOptions { threads: 1, ..SessionOptions::default() };
    let shipped = common::repo().join("engines/context-bias-demo");
    let dir = tempfile::tempdir().unwrap();
    for file in ["manifest.toml", "blazeface_full.onnx"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    for file in ["vanilla.onnx", "context_branch.onnx", "clef_fused.onnx"] {
        let model = std::fs::read(shipped.join(file)).unwrap();
        let fixed = fix_dimension(&model, "batch", 3);
        assert_ne!(fixed, model, "{file} has a symbolic batch dimension to fix");
        std::fs::write(dir.path().join(file), fixed).unwrap();
    }

    // Both paths: the two models with CLEF on the host, and the fused graph.
    for placement in [ClefPlacement::Host, ClefPlacement::Engine] {
        let dynamic = Bundle::load_placed(&shipped, &opts, placement).expect("shipped bundle");
        let fixed = Bundle::load_placed(dir.path(), &opts, placement).expect("fixed-batch bundle");
        assert_eq!(dynamic.fused(), placement == ClefPlacement::Engine);
        assert!(batches(&dynamic).iter().all(|b| *b == BatchDim::Dynamic));
        assert_eq!(batches(&fixed), vec![BatchDim::Fixed(3); batches(&dynamic).len()], "{placement:?}");
        same_scores(dynamic, fixed);
    }
}

/// The batch dimension of each classifier the bundle runs.
fn batches(bundle: &Bundle) -> Vec<BatchDim> {
    match &bundle.classifiers {
        Classifiers::Separate { vanilla, context_branch } => {
            std::iter::once(vanilla).chain(context_branch).map(|c| c.batch()).collect()
        }
        Classifiers::Fused(fused) => vec![fused.batch()],
    }
}

fn same_scores(dynamic: Bundle, fixed: Bundle) {
    // Five faces: a chunk of three and a padded chunk of two.
    let picture = common::astronaut();
    let faces: Vec<Rect> = (0..5)
        .map(|i| Rect { x: 20.0 + 30.0 * i as f32, y: 10.0 + 12.0 * i as f32, w: 150.0 + 10.0 * i as f32, h: 170.0 })
        .collect();
    let (mut dynamic, mut fixed) = (Analyzer::new(dynamic, 16), Analyzer::new(fixed, 16));
    let want = dynamic.analyze_boxes(&picture.view(), &faces).expect("dynamic batch runs");
    let got = fixed.analyze_boxes(&picture.view(), &faces).expect("fixed batch runs");
    assert_eq!(got.len(), 5, "one result per face, padding dropped");
    let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(close(&w.y_e, &g.y_e), "face {i}: Y_e {:?} vs {:?}", w.y_e, g.y_e);
        assert!(close(w.y_c.as_deref().unwrap(), g.y_c.as_deref().unwrap()), "face {i}: Y_c differs");
        assert!(close(&w.scores, &g.scores), "face {i}: decided scores differ");
    }
    assert!(want.windows(2).any(|p| !close(&p[0].y_e, &p[1].y_e)), "the faces differ, so an order mix-up would show");
}
