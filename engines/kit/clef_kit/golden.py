"""``write_golden``: the reference numbers a bundle proves itself against on every start.

The daemon runs each model of a bundle on whatever provider and precision it got (TensorRT
FP16, CUDA, the CPU) and compares the result with these FP32 numbers from ONNX Runtime's
CPU provider (``src/engine/acceptance.rs``). A bundle folder gains, beside its models (so
whatever copies a bundle's files copies them too):

- ``golden-pictures.npy``: a few whole pictures (uint8, N×H×W×3) with a face box each, for the
  daemon's whole preprocessing (crops, masking, colour, normalisation) then the models;
- ``golden-<section>.<input>.npy``: the same subjects' input tensors (float32, N×shape), exactly as
  the daemon's preprocessing builds them (:mod:`clef_kit.sampling`), for each model alone;
- ``golden.json``: the face boxes, which tensor feeds which model input, the sha256 of every
  model file (a replaced model makes the vectors stale), and per vector ``y_e``, ``y_c``,
  ``factual``, ``counterfactual``, ``debiased`` and the decision (``top``, ``active``).

Vectors are chosen, among more candidates, for a clear decision (a wide gap between the top
two debiased logits, or between every label's logit and its threshold), so a decision that
flips means the numbers moved, not that the reference sat on a knife edge.

    python -m clef_kit.golden engines/context-bias-demo
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tomllib

import numpy as np
import onnxruntime as ort

from . import world
from .sampling import InputSpec, SubjectSpec, build_input

PREFIX = "golden"
FORMAT = "clefd.golden/1"
SECTIONS = ("vanilla", "context_branch", "fused")


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _spec(d: dict) -> InputSpec:
    return InputSpec(name=d["name"], role=d["role"], width=int(d["width"]), height=int(d["height"]),
                     colour=d.get("colour", "RGB"), layout=d.get("layout", "NCHW"),
                     mean=[float(v) for v in d.get("mean", [])], std=[float(v) for v in d.get("std", [])])


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _phi(fusion: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """φ in float64, as the daemon's ``clef::Fusion::fuse``."""
    if fusion == "sum":
        return _log_sigmoid(a + b)
    if fusion == "hm":
        return _log_sigmoid(_log_sigmoid(a) + _log_sigmoid(b))
    if fusion == "rubi":
        return b * np.exp(_log_sigmoid(a))
    raise ValueError(f"unknown fusion '{fusion}'")


def _run(path: str, feeds: dict, output: str) -> np.ndarray:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run([output], {k: v for k, v in feeds.items() if k in names})[0].astype(np.float32)


def _candidates(n: int, seed: int, size: tuple[int, int]):
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % len(world.LABELS)
        s = world.render(label, (i * 3) % len(world.SCENES), rng, size)
        yield np.asarray(s.image.convert("RGB"), dtype=np.uint8), tuple(float(v) for v in s.box)


def write_golden(bundle_dir: str, vectors: int = 3, candidates: int = 16, seed: int = 27,
                 size: tuple[int, int] = (128, 96)) -> str:
    """Writes the golden files into the bundle and returns the path of its ``golden.json``."""
    path = os.path.join(bundle_dir, "manifest.toml")
    with open(path, "rb") as f:
        manifest = tomllib.load(f)
    subject = SubjectSpec(**manifest.get("subject", {}))
    fusion = manifest.get("fusion", "sum")
    star = manifest.get("counterfactual_e", 0.0)
    star = np.asarray([star] if isinstance(star, (int, float)) else star, dtype=np.float64)
    multi = manifest["task"] == "multi_label"
    thresholds = np.asarray(manifest.get("thresholds", []), dtype=np.float64)
    sections = {s: manifest[s] for s in SECTIONS if s in manifest}

    pictures, faces = [], []
    for image, face in _candidates(candidates, seed, size):
        pictures.append(image)
        faces.append(face)
    # Each section's inputs for every candidate, built as the daemon builds them.
    tensors: dict[str, dict[str, np.ndarray]] = {}
    for section, table in sections.items():
        tensors[section] = {}
        for d in table["inputs"]:
            spec = _spec(d)
            tensors[section][spec.name] = np.stack([build_input(p, f, spec, subject) for p, f in zip(pictures, faces)])
    y_e = _run(os.path.join(bundle_dir, sections["vanilla"]["file"]), tensors["vanilla"], sections["vanilla"]["output"])
    y_c = None
    if "context_branch" in sections:
        cb = sections["context_branch"]
        y_c = _run(os.path.join(bundle_dir, cb["file"]), tensors["context_branch"], cb["output"])
        a, e = y_c.astype(np.float64), y_e.astype(np.float64)
        factual = _phi(fusion, a, e)
        counterfactual = _phi(fusion, a, np.broadcast_to(star, e.shape))
        decided = factual - counterfactual
    else:
        factual = counterfactual = None
        decided = y_e.astype(np.float64)
    decided32 = decided.astype(np.float32).astype(np.float64)
    if multi:
        cut = np.log(thresholds / (1.0 - thresholds))
        margin = np.min(np.abs(decided32 - cut), axis=1)
    else:
        top2 = np.sort(decided32, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    keep = sorted(np.argsort(-margin, kind="stable")[:vectors].tolist())

    out_dir = bundle_dir
    for stale in os.listdir(out_dir):
        if stale.startswith(PREFIX + "-") and stale.endswith(".npy"):
            os.remove(os.path.join(out_dir, stale))
    np.save(os.path.join(out_dir, f"{PREFIX}-pictures.npy"), np.stack([pictures[i] for i in keep]))
    files: dict[str, dict[str, str]] = {}
    written: dict[tuple, str] = {}
    for section, table in sections.items():
        files[section] = {}
        for d in table["inputs"]:
            key = tuple(sorted((k, json.dumps(v)) for k, v in d.items()))
            if key not in written:
                written[key] = f"{PREFIX}-{section}.{d['name']}.npy"
                np.save(os.path.join(out_dir, written[key]), tensors[section][d["name"]][keep])
            files[section][d["name"]] = written[key]

    def row(a, i):
        return None if a is None else [float(v) for v in np.asarray(a[i], dtype=np.float32)]

    records = []
    for i in keep:
        d = decided32[i]
        if multi:
            scores = 1.0 / (1.0 + np.exp(-d))
            active = [int(j) for j in np.nonzero(scores >= thresholds)[0]]
            top = int(max(active, key=lambda j: scores[j])) if active else int(np.argmax(scores))
        else:
            active, top = [], int(np.argmax(d))
        records.append({"face": list(faces[i]), "margin": float(margin[i]), "y_e": row(y_e, i), "y_c": row(y_c, i),
                        "factual": row(factual, i), "counterfactual": row(counterfactual, i),
                        "debiased": row(decided if y_c is not None else None, i), "top": top, "active": active})
    golden = {
        "format": FORMAT,
        "reference": f"ONNX Runtime {ort.__version__}, CPUExecutionProvider, float32",
        "labels": len(manifest["labels"]),
        "models": {s: {"file": t["file"], "sha256": _sha256(os.path.join(bundle_dir, t["file"]))}
                   for s, t in sections.items()},
        "pictures": f"{PREFIX}-pictures.npy",
        "inputs": files,
        "vectors": records,
    }
    out = os.path.join(out_dir, f"{PREFIX}.json")
    with open(out, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clef_kit.golden", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="+", help="engine bundle folders (each with a manifest.toml)")
    p.add_argument("--vectors", type=int, default=3, help="reference vectors to keep (default 3)")
    args = p.parse_args(argv)
    for b in args.bundle:
        try:
            print(f"wrote {write_golden(b, vectors=args.vectors)}")
        except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as e:
            print(f"clef_kit.golden: {b}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
