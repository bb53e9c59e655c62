#!/usr/bin/env python3
"""The fair baseline for the context-bias demo (issue 16): the same vanilla architecture
(CaerNetLite, face + context streams) trained on the same biased pictures with plain
cross-entropy, no context-only branch and no CLEF, then scored on the ``biased``,
``balanced`` and ``anti`` splits exactly as ``train_demo.py`` scores the CLEF model.

    .local/kit-venv/bin/python engines/kit/baseline.py      # minutes, on the CPU, seeded

Prints one line per split and, with ``--json``, the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_demo  # noqa: E402
from clef_kit import export_vanilla_bundle, world  # noqa: E402
from clef_kit.demo_model import CaerNetLite  # noqa: E402
from clef_kit.evaluate import batch_inputs  # noqa: E402


def train(args) -> CaerNetLite:
    torch.manual_seed(args.seed)
    face, ctx, y = train_demo.training_data(args)
    model = CaerNetLite(len(world.LABELS))

    def batch_loss(idx):
        loss = F.cross_entropy(model(face[idx], ctx[idx]), y[idx])
        return loss, np.array([float(loss)])

    train_demo.fit(model, args, len(y), batch_loss, lambda m: f"cross-entropy {m[0]:.3f}")
    return model


def report(model: CaerNetLite, args) -> dict:
    results = {}
    model.eval()
    for split, seed in (("biased", 101), ("balanced", 102), ("anti", 103)):
        items = train_demo.render(split, args.test, seed, args.difficulty)
        face, ctx = (torch.from_numpy(a) for a in batch_inputs(items, [train_demo.FACE, train_demo.CONTEXT],
                                                               train_demo.SUBJECT))
        with torch.no_grad():
            pred = model(face, ctx).argmax(-1).numpy()
        truth = np.array([it.label for it in items])
        results[split] = round(100.0 * float((pred == truth).mean()), 2)
        print(f"{split:9} baseline {results[split]:5.1f} %   (n = {len(truth)})", flush=True)
    return results


def slice_result(model: CaerNetLite, slice_dir: str) -> dict:
    """Right answers on a dataset folder (the committed eval slice), as ``clefd eval``
    counts them for the exported bundle."""
    from clef_kit.dataset import read_split

    items = read_split(slice_dir, world.LABELS)
    face, ctx = (torch.from_numpy(a) for a in batch_inputs(items, [train_demo.FACE, train_demo.CONTEXT],
                                                           train_demo.SUBJECT))
    model.eval()
    with torch.no_grad():
        pred = model(face, ctx).argmax(-1).numpy()
    correct = int((pred == np.array([it.label for it in items])).sum())
    return {"correct": correct, "accuracy": round(100.0 * correct / max(1, len(items)), 4)}


def export(model: CaerNetLite, out: str) -> None:
    """The baseline as a bundle (no context branch), so ``clefd eval`` scores it too."""
    export_vanilla_bundle(
        out, model, name="context-bias-baseline", version="1.0.0", labels=world.LABELS,
        description="The fair baseline: CaerNetLite trained on the biased world with cross-entropy, no CLEF",
        inputs=[train_demo.FACE, train_demo.CONTEXT], detector=train_demo.DETECTOR,
        detector_file=os.path.join(train_demo.ROOT, "engines", "face-fer2013", "blazeface_full.onnx"),
        subject=train_demo.SUBJECT, link_detector=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The same defaults as train_demo.py, so the two are trained alike.
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--train", type=int, default=10500)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--test", type=int, default=700)
    p.add_argument("--bias", type=float, default=0.95)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--difficulty", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also export the baseline as a bundle into this folder")
    p.add_argument("--slice", help="also score the model on this dataset folder (the committed eval slice)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = train(args)
    results = report(model, args)
    if args.out:
        export(model, args.out)
    out = {"test_accuracy": results}
    if args.slice:
        out["slice"] = slice_result(model, args.slice)
    if args.json:
        print(json.dumps({"baseline": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
