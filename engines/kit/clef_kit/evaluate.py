"""The kit's own evaluation: accuracy (or mAP) of factual and TIE decisions on a dataset.

Works on a trained :class:`~clef_kit.clef.CLEF` in memory, or on an exported bundle through
ONNX Runtime's Python package, with the daemon's preprocessing (:mod:`clef_kit.sampling`).
``clefd eval`` computes the same numbers in Rust; they agree within 0.5 points.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib

import numpy as np
import torch

from .clef import fuse
from .dataset import read_split
from .sampling import InputSpec, SubjectSpec, build_input


def batch_inputs(items, specs: list[InputSpec], subject: SubjectSpec) -> list[np.ndarray]:
    """One float32 array per input spec, stacking every item's tensor."""
    return [np.stack([build_input(it.image, it.box, s, subject) for it in items]) for s in specs]


def confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Rows are the truth, columns the decision."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (truth, pred), 1)
    return m


def summarise(y_e: np.ndarray, y_c: np.ndarray, y_e_star: np.ndarray, fusion: str, truth: np.ndarray) -> dict:
    """Correct counts and accuracies for the vanilla model alone, the factual and the TIE."""
    with torch.no_grad():
        e, c = torch.from_numpy(y_e).double(), torch.from_numpy(y_c).double()
        star = torch.from_numpy(np.broadcast_to(y_e_star, y_c.shape).copy()).double()
        factual = fuse(c, e, fusion)
        tie = factual - fuse(c, star, fusion)
    k = y_e.shape[1]
    out = {"n": int(len(truth))}
    for name, logits in (("vanilla", e), ("factual", factual), ("debiased", tie)):
        pred = logits.argmax(-1).numpy()
        correct = int((pred == truth).sum())
        out[name] = {"correct": correct, "accuracy": 100.0 * correct / max(1, len(truth)),
                     "confusion": confusion(truth, pred, k).tolist()}
    return out


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """AP of one label: mean precision at each positive, ranked by score (ties keep item
    order, as ``clefd eval`` does); None when the label has no positive item."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if positive[i]:
            hits += 1
            total += hits / rank
    return total / hits if hits else None


def best_f1_thresholds(scores: np.ndarray, positive: np.ndarray) -> list[float]:
    """Per label (column), the score threshold with the best F1: what makes a label
    ``active`` in a multi-label bundle. Candidates are the scores rounded to 3 decimals;
    a label without a positive item keeps 0.5."""
    out = []
    for j in range(scores.shape[1]):
        truth = positive[:, j]
        best, best_t = -1.0, 0.5
        for t in np.unique(np.round(scores[:, j], 3)) if truth.any() else []:
            pred = scores[:, j] >= t
            f1 = 2 * float((pred & truth).sum()) / max(1.0, float(pred.sum() + truth.sum()))
            if f1 > best:
                best, best_t = f1, float(t)
        out.append(round(best_t, 3))
    return out


def summarise_multi(y_e: np.ndarray, y_c: np.ndarray, y_e_star: np.ndarray, fusion: str,
                    truth: list[tuple]) -> dict:
    """Mean average precision (percent) of the vanilla model, the factual and the TIE,
    scoring each label by the sigmoid of the logits."""
    with torch.no_grad():
        e, c = torch.from_numpy(y_e).double(), torch.from_numpy(y_c).double()
        star = torch.from_numpy(np.broadcast_to(y_e_star, y_c.shape).copy()).double()
        factual = fuse(c, e, fusion)
        tie = factual - fuse(c, star, fusion)
    k = y_e.shape[1]
    positive = np.array([[j in t for j in range(k)] for t in truth])
    out = {"n": len(truth)}
    for name, logits in (("vanilla", e), ("factual", factual), ("debiased", tie)):
        scores = torch.sigmoid(logits).numpy()
        aps = [average_precision(scores[:, j], positive[:, j]) for j in range(k)]
        defined = [a for a in aps if a is not None]
        out[name] = {"map": 100.0 * sum(defined) / max(1, len(defined)), "ap": aps}
    return out


def evaluate_bundle(bundle_dir: str, dataset_dir: str) -> dict:
    """Runs an exported bundle's ONNX models over ``dataset_dir`` with ONNX Runtime."""
    import onnxruntime as ort

    with open(os.path.join(bundle_dir, "manifest.toml"), "rb") as f:
        m = tomllib.load(f)
    labels = m["labels"]
    items = read_split(dataset_dir, labels)
    sub = SubjectSpec(**m.get("subject", {}))

    def run(section):
        spec = m[section]
        specs = [InputSpec(**i) for i in spec["inputs"]]
        sess = ort.InferenceSession(os.path.join(bundle_dir, spec["file"]), providers=["CPUExecutionProvider"])
        feeds = dict(zip((s.name for s in specs), batch_inputs(items, specs, sub)))
        return sess.run([spec["output"]], feeds)[0]

    star = np.asarray(m.get("counterfactual_e", 0.0), dtype=np.float64)
    y_e = run("vanilla")
    # A bundle without a context branch (debias off, e.g. the fair baseline) has only the
    # vanilla view: the other two are dropped below.
    y_c = run("context_branch") if "context_branch" in m else np.zeros_like(y_e)
    if m.get("task") == "multi_label":
        out = summarise_multi(y_e, y_c, star, m.get("fusion", "sum"), [it.labels for it in items])
    else:
        out = summarise(y_e, y_c, star, m.get("fusion", "sum"), np.array([it.label for it in items]))
    if "context_branch" not in m:
        out = {"n": out["n"], "vanilla": out["vanilla"]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Evaluate an engine bundle on a dataset folder (index.csv + PNGs).")
    p.add_argument("--bundle", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    a = p.parse_args(argv)
    r = evaluate_bundle(a.bundle, a.dataset)
    if a.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    else:
        for name in (k for k in ("vanilla", "factual", "debiased") if k in r):
            if "map" in r[name]:
                print(f"{name:8} mAP {r[name]['map']:6.2f} %")
            else:
                print(f"{name:8} {r[name]['accuracy']:6.2f} %  ({r[name]['correct']}/{r['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
