#!/usr/bin/env python3
"""Retrains engines/context-multilabel-demo from nothing, on the CPU, with fixed seeds.

    .local/kit-venv/bin/python engines/kit/train_multilabel.py     # render, train, evaluate, export

The multi-label context-bias world (:mod:`clef_kit.multi_world`: one or two of six states
per person, scenes biased towards one of them) trained the way ``train_demo.py`` trains the
single-label one: the CAER-Net-style model and its context-only branch with CLEF's objective
(binary cross-entropy per label), then the fair baseline (the same vanilla architecture, the
same pictures, plain binary cross-entropy, no CLEF). Prints vanilla / factual / TIE / baseline
mAP on ``biased``, ``balanced`` and ``anti``, picks each label's threshold (best F1 of the TIE
on ``balanced``), exports both bundles, an ``anti`` evaluation slice and the numbers
``clefd eval`` must reproduce (``eval/expected.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_demo  # noqa: E402
from clef_kit import CLEF, InputSpec, clef_loss, export_bundle, export_vanilla_bundle, multi_world  # noqa: E402
from clef_kit.demo_model import CaerNetLite, ContextOnly  # noqa: E402
from clef_kit.evaluate import average_precision, best_f1_thresholds, evaluate_bundle  # noqa: E402
from clef_kit.sampling import build_input  # noqa: E402

ROOT = train_demo.ROOT
#: Colour matters here (tears, blushing): the face stream sees RGB.
FACE = InputSpec("face", "face", 48, 48, colour="RGB", mean=[127.5] * 3, std=[127.5] * 3)
CONTEXT = train_demo.CONTEXT
SUBJECT = train_demo.SUBJECT
LABELS = multi_world.LABELS
K = len(LABELS)


def multi_hot(states) -> np.ndarray:
    y = np.zeros(K, dtype=np.float32)
    y[list(states)] = 1.0
    return y


def tensors(samples, rng: np.random.Generator | None = None):
    """Face and context inputs (boxes jittered as detections are, when ``rng`` is given) and
    multi-hot targets."""
    faces, contexts, ys = [], [], []
    for s in samples:
        x, y, w, h = s.box
        if rng is not None:
            k = rng.uniform(0.88, 1.12)
            dx, dy = rng.uniform(-0.08, 0.08, 2) * w
            box = (x + dx + w * (1 - k) / 2, y + dy + h * (1 - k) / 2, w * k, h * k)
        else:
            box = s.box
        image = np.asarray(s.image)
        faces.append(build_input(image, box, FACE, SUBJECT))
        contexts.append(build_input(image, box, CONTEXT, SUBJECT))
        ys.append(multi_hot(s.labels))
    return torch.from_numpy(np.stack(faces)), torch.from_numpy(np.stack(contexts)), torch.from_numpy(np.stack(ys))


def training_data(args):
    """The jittered biased training set, rendered once per setting into ``.local/kit-cache``."""
    t0 = time.time()
    cache = os.path.join(ROOT, ".local", "kit-cache",
                         f"multi-{multi_world.VERSION}-{args.train}-{args.bias}-{args.difficulty}-{args.seed}.pt")
    if os.path.exists(cache):
        data = torch.load(cache)
    else:
        samples = multi_world.sample_split("biased", args.train, args.seed, match=args.bias,
                                           difficulty=args.difficulty)
        data = tensors(samples, np.random.default_rng(args.seed))
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        torch.save(data, cache)
    print(f"{args.train} biased pictures ({args.bias:.0%} scene = a state shown), ready in {time.time() - t0:.0f} s",
          flush=True)
    return data


def train_clef(args, data) -> CLEF:
    torch.manual_seed(args.seed)
    face, ctx, y = data
    model = CLEF(CaerNetLite(K, face_channels=3), ContextOnly(K, bound=args.context_bound), K, fusion=args.fusion,
                 task="multi_label")

    def batch_loss(idx):
        loss = clef_loss(model, model((face[idx], ctx[idx]), (ctx[idx],)), y[idx], kl_weight=args.kl_weight)
        return loss.total, np.array([float(loss.total), float(loss.factual), float(loss.counterfactual),
                                     float(loss.kl)])

    train_demo.fit(model, args, len(y), batch_loss,
                   lambda m: f"loss {m[0]:.3f} (factual {m[1]:.3f}, counterfactual {m[2]:.3f}, kl {m[3]:.3f})")
    return model


def train_baseline(args, data) -> CaerNetLite:
    torch.manual_seed(args.seed)
    face, ctx, y = data
    model = CaerNetLite(K, face_channels=3)

    def batch_loss(idx):
        loss = F.binary_cross_entropy_with_logits(model(face[idx], ctx[idx]), y[idx])
        return loss, np.array([float(loss)])

    train_demo.fit(model, args, len(y), batch_loss, lambda m: f"binary cross-entropy {m[0]:.3f}")
    return model


def mean_ap(logits: np.ndarray, truth: np.ndarray) -> float:
    """mAP in percent, scoring each label by the sigmoid of ``logits`` (as ``clefd eval``)."""
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    aps = [average_precision(scores[:, j], truth[:, j] > 0) for j in range(truth.shape[1])]
    defined = [a for a in aps if a is not None]
    return 100.0 * sum(defined) / max(1, len(defined))


def views(model: CLEF, face, ctx) -> dict:
    """Vanilla, factual and TIE logits of the CLEF model."""
    model.eval()
    with torch.no_grad():
        out = model((face, ctx), (ctx,))
    return {"vanilla": out.y_e.numpy(), "factual": out.factual.numpy(), "debiased": out.tie.numpy()}


def report(model: CLEF, base: CaerNetLite | None, args):
    """mAP of every view on the three test splits; thresholds from ``balanced``."""
    results, thresholds = {}, None
    for split, seed in (("biased", 101), ("balanced", 102), ("anti", 103)):
        face, ctx, y = tensors(multi_world.sample_split(split, args.test, seed, difficulty=args.difficulty))
        truth = y.numpy()
        row = {name: round(mean_ap(v, truth), 2) for name, v in views(model, face, ctx).items()}
        if base is not None:
            base.eval()
            with torch.no_grad():
                row["baseline"] = round(mean_ap(base(face, ctx).numpy(), truth), 2)
        if split == "balanced":
            tie = views(model, face, ctx)["debiased"].astype(np.float64)
            thresholds = best_f1_thresholds(1.0 / (1.0 + np.exp(-tie)), truth > 0)
        results[split] = row
        print(f"{split:9} mAP: vanilla {row['vanilla']:5.1f}  factual {row['factual']:5.1f}  "
              f"TIE {row['debiased']:5.1f}  baseline {row.get('baseline', float('nan')):5.1f}   (n = {len(truth)})", flush=True)
    return results, thresholds


def write_slice(out_dir: str, n: int, seed: int, difficulty: float) -> None:
    """The ``anti`` evaluation slice in ``clefd eval``'s layout (``label`` = ``a;b``)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, "index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "x", "y", "w", "h", "scene"])
        for i, s in enumerate(multi_world.sample_split("anti", n, seed, difficulty=difficulty)):
            name = f"{i:05d}.png"
            s.image.save(os.path.join(out_dir, name), optimize=True)
            w.writerow([name, ";".join(LABELS[k] for k in s.labels), *(f"{v:.2f}" for v in s.box),
                        multi_world.SCENES[s.scene]])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "engines", "context-multilabel-demo"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--train", type=int, default=6000, help="biased training pictures")
    p.add_argument("--test", type=int, default=600, help="pictures per test split")
    p.add_argument("--bias", type=float, default=0.95, help="share of training scenes that go with a state shown")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--kl-weight", type=float, default=1.0)
    p.add_argument("--fusion", default="sum", choices=["sum", "hm", "rubi"])
    p.add_argument("--context-bound", type=float, default=3.0)
    p.add_argument("--slice", type=int, default=60, help="pictures in the committed eval slice of anti")
    p.add_argument("--difficulty", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads (1: bit-for-bit repeatable)")
    p.add_argument("--no-export", action="store_true", help="train the CLEF model and print its table only "
                   "(no baseline, nothing written): for trying out a recipe")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = training_data(args)
    t0 = time.time()
    model = train_clef(args, data)
    clef_s = time.time() - t0
    base = None if args.no_export else train_baseline(args, data)
    results, thresholds = report(model, base, args)
    print(f"thresholds (best F1 of the TIE on balanced): {thresholds}", flush=True)
    if args.no_export:
        return 0
    detector_file = os.path.join(ROOT, "engines", "face-fer2013", "blazeface_full.onnx")
    export_bundle(
        args.out, model, name="context-multilabel-demo", version="1.0.0", labels=LABELS,
        description="CAER-Net-style multi-label model + context-only branch trained with CLEF on the "
                    "multi-label context-bias world", thresholds=thresholds,
        vanilla_inputs=[FACE, CONTEXT], context_inputs=[CONTEXT], detector=train_demo.DETECTOR,
        detector_file=detector_file, subject=SUBJECT, link_detector=True, fused=True)
    baseline_dir = os.path.join(args.out, "eval", "baseline")
    export_vanilla_bundle(
        baseline_dir, base, name="context-multilabel-baseline", version="1.0.0", labels=LABELS,
        description="The fair baseline: CaerNetLite trained on the multi-label biased world with binary "
                    "cross-entropy, no CLEF", inputs=[FACE, CONTEXT], detector=train_demo.DETECTOR,
        detector_file=detector_file, subject=SUBJECT, link_detector=True, thresholds=[0.5] * K)
    slice_dir = os.path.join(args.out, "eval", "anti")
    write_slice(slice_dir, args.slice, 104, args.difficulty)
    kit = evaluate_bundle(args.out, slice_dir)
    base_kit = evaluate_bundle(baseline_dir, slice_dir)
    clefd = train_demo.clefd_eval(args.out, slice_dir)
    base_clefd = train_demo.clefd_eval(baseline_dir, slice_dir)

    def maps(r):
        return {k: round(r[k]["map"], 4) for k in ("vanilla", "factual", "debiased")}

    with open(os.path.join(args.out, "eval", "expected.json"), "w") as f:
        json.dump({"slice": "anti", "n": kit["n"], "kit": maps(kit), "clefd": maps(clefd or kit),
                   "baseline": {"kit": round(base_kit["vanilla"]["map"], 4),
                                "clefd": round((base_clefd or base_kit)["vanilla"]["map"], 4)},
                   "training": {k: getattr(args, k) for k in ("seed", "bias", "difficulty", "epochs", "train", "lr",
                                                              "kl_weight", "fusion", "context_bound")},
                   "clef_training_s_per_epoch": round(clef_s / args.epochs, 1),
                   "test_map": results}, f, indent=1)
        f.write("\n")
    print(f"exported {args.out}; slice mAP: factual {kit['factual']['map']:.1f}, TIE {kit['debiased']['map']:.1f}, "
          f"baseline {base_kit['vanilla']['map']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
