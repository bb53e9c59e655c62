#!/usr/bin/env python3
"""Retrains engines/context-bias-demo from nothing, on the CPU, with fixed seeds.

    python3 engines/kit/train_demo.py            # render, train, evaluate, export (minutes)

Renders the context-bias world (``biased`` for training; ``biased``, ``balanced`` and
``anti`` for testing), trains the CAER-Net-style model and its context-only branch with CLEF's
objective, prints vanilla / factual / TIE accuracy on each split, and exports the bundle with
its evaluation slice (``eval/anti``) and the numbers ``clefd eval`` must reproduce. Then the
fair baseline (``baseline.py``: the same vanilla architecture, the same pictures, plain
cross-entropy, no CLEF) is trained and exported to ``eval/baseline``, and its numbers stored
beside the CLEF ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clef_kit import CLEF, InputSpec, SubjectSpec, clef_loss, export_bundle, world  # noqa: E402
from clef_kit.dataset import Item, write_split  # noqa: E402
from clef_kit.demo_model import CaerNetLite, ContextOnly  # noqa: E402
from clef_kit.evaluate import batch_inputs, evaluate_bundle, summarise  # noqa: E402
from clef_kit.sampling import build_input  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FACE = InputSpec("face", "face", 48, 48, colour="GRAY", mean=[127.5], std=[127.5])
CONTEXT = InputSpec("context", "context_masked", 64, 48, colour="RGB", mean=[127.5] * 3, std=[127.5] * 3)
SUBJECT = SubjectSpec(face_scale=1.25, mask="face", mask_scale=1.8)
DETECTOR = {
    "kind": "blazeface", "input": "input", "input_size": 192, "layout": "NCHW",
    "regressors": "reshaped_regressor_face_4", "scores": "reshaped_classifier_face_4",
    "score_threshold": 0.5, "nms_iou": 0.3, "max_faces": 8,
    "anchors": {"strides": [4], "offset": 0.5, "aspect_ratios": [1.0], "interpolated_scale_aspect_ratio": 0.0},
}


def render(split: str, n: int, seed: int, difficulty: float, match=None) -> list[Item]:
    return [Item("", s.label, s.box, s.scene, np.asarray(s.image))
            for s in world.sample_split(split, n, seed, match=match, difficulty=difficulty)]


def jittered(items: list[Item], rng: np.random.Generator, copies: int):
    """Training tensors with the face box shifted and scaled a little, as detections are."""
    faces, contexts, labels = [], [], []
    for _ in range(copies):
        for it in items:
            x, y, w, h = it.box
            s = rng.uniform(0.88, 1.12)
            dx, dy = rng.uniform(-0.08, 0.08, 2) * w
            box = (x + dx + w * (1 - s) / 2, y + dy + h * (1 - s) / 2, w * s, h * s)
            faces.append(build_input(it.image, box, FACE, SUBJECT))
            contexts.append(build_input(it.image, box, CONTEXT, SUBJECT))
            labels.append(it.label)
    return torch.from_numpy(np.stack(faces)), torch.from_numpy(np.stack(contexts)), torch.tensor(labels)


def logits(model: CLEF, items: list[Item]):
    face, ctx = (torch.from_numpy(a) for a in batch_inputs(items, [FACE, CONTEXT], SUBJECT))
    model.eval()
    with torch.no_grad():
        return model.vanilla(face, ctx).numpy(), model.context_branch(ctx).numpy()


def training_data(args):
    """The jittered training tensors of the biased split: rendered once per setting, then
    read from ``.local/kit-cache`` (the CLEF model and the baseline train on the same)."""
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    cache = os.path.join(ROOT, ".local", "kit-cache", f"train-{world.VERSION}-{args.train}-{args.bias}-{args.difficulty}-{args.seed}-{args.copies}.pt")
    if os.path.exists(cache):
        face, ctx, y = torch.load(cache)
    else:
        items = render("biased", args.train, args.seed, args.difficulty, match=args.bias)
        face, ctx, y = jittered(items, rng, args.copies)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        torch.save((face, ctx, y), cache)
    print(f"{args.train} biased pictures ({args.bias:.0%} scene = expression), "
          f"{len(y)} training samples, ready in {time.time() - t0:.0f} s", flush=True)
    return face, ctx, y


def fit(model: torch.nn.Module, args, n: int, batch_loss, describe) -> None:
    """Adam with a one-cycle schedule over ``args.epochs`` seeded passes of ``n`` samples.
    ``batch_loss(idx)`` returns the loss to minimise and the numbers to log (a NumPy
    array); ``describe`` turns their per-batch mean into the epoch's log line."""
    t0 = time.time()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    batches = (n + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * batches)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        totals = 0.0
        for i in range(0, n, args.batch):
            loss, logged = batch_loss(order[i:i + args.batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            totals = totals + logged
        print(f"epoch {epoch + 1}/{args.epochs}: {describe(totals / batches)}  {time.time() - t0:.0f} s", flush=True)


def train(args) -> CLEF:
    torch.manual_seed(args.seed)
    face, ctx, y = training_data(args)
    k = len(world.LABELS)
    model = CLEF(CaerNetLite(k), ContextOnly(k, bound=args.context_bound), k, fusion=args.fusion,
                 task="single_label")

    def batch_loss(idx):
        loss = clef_loss(model, model((face[idx], ctx[idx]), (ctx[idx],)), y[idx], kl_weight=args.kl_weight)
        parts = np.array([float(loss.total), float(loss.factual), float(loss.counterfactual), float(loss.kl)])
        return loss.total, parts

    fit(model, args, len(y), batch_loss,
        lambda m: f"loss {m[0]:.3f} (factual {m[1]:.3f}, counterfactual {m[2]:.3f}, kl {m[3]:.3f})")
    return model


def report(model: CLEF, args) -> dict:
    results = {}
    star = model.y_e_star.detach().double().numpy()
    for split, seed in (("biased", 101), ("balanced", 102), ("anti", 103)):
        items = render(split, args.test, seed, args.difficulty)
        y_e, y_c = logits(model, items)
        r = summarise(y_e, y_c, star, model.fusion, np.array([it.label for it in items]))
        results[split] = {k: round(r[k]["accuracy"], 2) for k in ("vanilla", "factual", "debiased")}
        if split == "balanced":
            print("TIE confusion on balanced (rows: truth):", json.dumps(r["debiased"]["confusion"]), flush=True)
        print(f"{split:9} vanilla {r['vanilla']['accuracy']:5.1f} %  factual {r['factual']['accuracy']:5.1f} %  "
              f"TIE {r['debiased']['accuracy']:5.1f} %   (n = {r['n']})", flush=True)
    return results


def clefd_eval(bundle: str, dataset: str):
    """``clefd eval --json`` on the slice, when the daemon is built (its numbers are the ones
    the Rust test must reproduce exactly)."""
    exe = os.path.join(ROOT, "target", "release", "clefd")
    if not os.path.exists(exe):
        return None
    out = subprocess.run([exe, "eval", "--bundle", bundle, "--dataset", dataset, "--json"], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "engines", "context-bias-demo"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--train", type=int, default=10500, help="biased training pictures")
    p.add_argument("--copies", type=int, default=1, help="jittered copies of each training picture")
    p.add_argument("--test", type=int, default=700, help="pictures per test split")
    p.add_argument("--bias", type=float, default=0.95, help="share of training scenes that match the expression")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--kl-weight", type=float, default=1.0)
    p.add_argument("--fusion", default="sum", choices=["sum", "hm", "rubi"])
    p.add_argument("--context-bound", type=float, default=3.0, help="bound on the context branch's logits (0: none)")
    p.add_argument("--slice", type=int, default=70, help="pictures in the committed eval slice of anti")
    p.add_argument("--difficulty", type=float, default=1.0, help="blur and noise of the faces (1: default)")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch threads; 1 (the default) makes training bit-for-bit repeatable on a machine")
    p.add_argument("--checkpoint", help="load the trained model from this file instead of training "
                   "(a file this script saved: .local/kit-cache/model-*.pt)")
    p.add_argument("--no-export", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    if args.checkpoint:
        model = torch.load(args.checkpoint)
    else:
        model = train(args)
        saved = os.path.join(ROOT, ".local", "kit-cache", f"model-{os.getpid()}.pt")
        torch.save(model, saved)
        print(f"saved the trained model to {saved}", flush=True)
    results = report(model, args)
    if args.no_export:
        return 0
    export_bundle(
        args.out, model, name="context-bias-demo", version="1.0.0", labels=world.LABELS,
        description="CAER-Net-style model + context-only branch trained with CLEF on the context-bias world",
        vanilla_inputs=[FACE, CONTEXT], context_inputs=[CONTEXT], detector=DETECTOR,
        detector_file=os.path.join(ROOT, "engines", "face-fer2013", "blazeface_full.onnx"), subject=SUBJECT,
        link_detector=True, fused=True)
    slice_dir = os.path.join(args.out, "eval", "anti")
    shutil.rmtree(slice_dir, ignore_errors=True)
    write_split(slice_dir, "anti", args.slice, seed=104, difficulty=args.difficulty)
    kit = evaluate_bundle(args.out, slice_dir)
    clefd = clefd_eval(args.out, slice_dir)

    def counts(r):
        return {k: {"correct": r[k]["correct"], "accuracy": round(r[k]["accuracy"], 4)}
                for k in ("vanilla", "factual", "debiased")}

    import baseline

    base = baseline.train(args)
    base_tests = baseline.report(base, args)
    for split, acc in base_tests.items():
        results[split]["baseline"] = acc
    baseline.export(base, os.path.join(args.out, "eval", "baseline"))
    base_kit = baseline.slice_result(base, slice_dir)
    base_clefd = clefd_eval(os.path.join(args.out, "eval", "baseline"), slice_dir)
    base_clefd = {"correct": base_clefd["vanilla"]["correct"],
                  "accuracy": round(base_clefd["vanilla"]["accuracy"], 4)} if base_clefd else base_kit
    with open(os.path.join(args.out, "eval", "expected.json"), "w") as f:
        json.dump({"slice": "anti", "n": kit["n"], "kit": counts(kit), "clefd": counts(clefd or kit),
                   "baseline": {"kit": base_kit, "clefd": base_clefd},
                   "training": {k: getattr(args, k) for k in ("seed", "bias", "difficulty", "epochs", "train",
                                                              "copies", "lr", "kl_weight", "fusion", "context_bound")},
                   "test_accuracy": results}, f, indent=1)
        f.write("\n")
    if clefd is None:
        print("note: target/release/clefd not built: expected.json holds the kit's numbers for clefd too; "
              "run `make kit-train` (it builds clefd first) to record clefd's own")
    print(f"exported {args.out}; slice: factual {kit['factual']['accuracy']:.1f} %, TIE {kit['debiased']['accuracy']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
