"""Train a paper-style model with CLEF on CAER-S or EMOTIC and export a clefd bundle.

    python -m clef_kit.train --dataset caer-s:/data/CAER-S --out bundles/caer-s
    python -m clef_kit.train --dataset emotic:/data/emotic --out bundles/emotic --resume

CAER-S trains CAER-Net (face + masked context, single-label, 7 classes); EMOTIC trains
EMOT-Net (body + whole picture, multi-label, 26 categories). Both get CLEF's context-only
branch on the masked context and its objective. Crops are the daemon's (faces found by the
detector bundle's detector through ``clefd faces`` where the dataset gives no box). Runs on
CUDA when PyTorch sees a GPU, else on the CPU; logs progress; saves a checkpoint after every
epoch (``--resume`` continues from it); scores the test split (accuracy of vanilla /
factual / TIE, or per-label AP and mAP) and exports the bundle with the fused CLEF graph.

Pretrained backbones cannot be downloaded here: ``--weights FILE`` seeds the vanilla model
from a local ``state_dict``; without it the models start from scratch (and the log says so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import datasets, models
from .clef import CLEF, clef_loss
from .datasets import DatasetError, Record
from .evaluate import best_f1_thresholds, summarise, summarise_multi
from .export import export_bundle
from .faces import find_faces
from .sampling import InputSpec, SubjectSpec, build_input

NORM = dict(mean=[127.5] * 3, std=[127.5] * 3)


@dataclass
class Recipe:
    """What a dataset trains: inputs, subject geometry, task and the two models."""

    task: str
    vanilla_inputs: list[InputSpec]
    context_inputs: list[InputSpec]
    subject: SubjectSpec
    vanilla: Callable[[int], torch.nn.Module]
    description: str


RECIPES = {
    "caer-s": Recipe(
        "single_label",
        [InputSpec("face", "face", 64, 64, **NORM), InputSpec("context", "context_masked", 112, 84, **NORM)],
        [InputSpec("context", "context_masked", 112, 84, **NORM)],
        SubjectSpec(face_scale=1.25, mask="face", mask_scale=1.8), models.caer_net,
        "CAER-Net (face + masked context) with CLEF's context-only branch, trained on CAER-S"),
    "emotic": Recipe(
        "multi_label",
        [InputSpec("body", "body", 56, 128, **NORM), InputSpec("image", "scene", 112, 112, **NORM)],
        [InputSpec("context", "context_masked", 112, 112, **NORM)],
        SubjectSpec(face_scale=1.25, mask="body"), models.EmotNet,
        "EMOT-Net (body + whole picture) with CLEF's context-only branch, trained on EMOTIC"),
}


class Crops(torch.utils.data.Dataset):
    """Records → (vanilla inputs, context inputs, target), crops built as the daemon builds
    them; in training the subject box is shifted and scaled a little, as detections are."""

    def __init__(self, records: list[Record], recipe: Recipe, num_labels: int, jitter: bool, seed: int):
        self.records, self.recipe, self.k, self.jitter, self.seed = records, recipe, num_labels, jitter, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        image = r.image()
        x, y, w, h = r.face
        if self.jitter:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            s = rng.uniform(0.9, 1.1)
            dx, dy = rng.uniform(-0.06, 0.06, 2) * w
            x, y, w, h = x + dx + w * (1 - s) / 2, y + dy + h * (1 - s) / 2, w * s, h * s
        box = (x, y, w, h)
        vanilla = [torch.from_numpy(build_input(image, box, s, self.recipe.subject)) for s in self.recipe.vanilla_inputs]
        context = [torch.from_numpy(build_input(image, box, s, self.recipe.subject)) for s in self.recipe.context_inputs]
        if self.recipe.task == "single_label":
            target = torch.tensor(r.labels[0])
        else:
            target = torch.zeros(self.k)
            target[list(r.labels)] = 1.0
        return vanilla, context, target


def load_weights(model: torch.nn.Module, path: str, log) -> None:
    """Seeds ``model`` from a local ``state_dict``: every tensor whose name and shape fit."""
    try:
        state = torch.load(path, map_location="cpu")
    except (OSError, RuntimeError) as e:
        raise DatasetError(f"{path}: cannot load weights ({e})") from e
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not fit:
        raise DatasetError(f"{path}: none of its {len(state)} tensors fits the vanilla model (names and shapes "
                           f"of {type(model).__name__}: {', '.join(list(own)[:4])}, ...)")
    model.load_state_dict(fit, strict=False)
    log(f"weights: {len(fit)} of {len(own)} tensors of the vanilla model from {path}")


def predict(model: CLEF, data: Crops, device, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """y_e and y_c of every record."""
    model.eval()
    y_e, y_c = [], []
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)
    with torch.no_grad():
        for vanilla, context, _ in loader:
            y_e.append(model.vanilla(*(t.to(device) for t in vanilla)).cpu())
            y_c.append(model.context_branch(*(t.to(device) for t in context)).cpu())
    return torch.cat(y_e).numpy(), torch.cat(y_c).numpy()


def score(model: CLEF, data: Crops, device, batch: int) -> dict:
    """Accuracy (single-label) or per-label AP and mAP (multi-label) of the three views."""
    y_e, y_c = predict(model, data, device, batch)
    star = model.y_e_star.detach().cpu().double().numpy()
    if model.task == "single_label":
        return summarise(y_e, y_c, star, model.fusion, np.array([r.labels[0] for r in data.records]))
    return summarise_multi(y_e, y_c, star, model.fusion, [r.labels for r in data.records])


def thresholds_for(model: CLEF, data: Crops, device, batch: int) -> list[float]:
    """Per label, the TIE score threshold with the best F1 on ``data`` (0.5 without positives)."""
    y_e, y_c = predict(model, data, device, batch)
    with torch.no_grad():
        out = model.effects(torch.from_numpy(y_e), torch.from_numpy(y_c))
        scores = torch.sigmoid(out.tie).numpy()
    truth = np.zeros_like(scores, dtype=bool)
    for i, r in enumerate(data.records):
        truth[i, list(r.labels)] = True
    return best_f1_thresholds(scores, truth)


def detector_of(bundle: str) -> tuple[dict, str]:
    """The ``[detector]`` table of a bundle and its model file (the exported bundle's detector)."""
    path = os.path.join(bundle, "manifest.toml")
    try:
        with open(path, "rb") as f:
            table = dict(tomllib.load(f)["detector"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise DatasetError(f"{path}: cannot read its [detector] ({e})") from e
    return table, os.path.realpath(os.path.join(bundle, table["file"]))


def save_checkpoint(path: str, model: CLEF, opt, epoch: int, args) -> None:
    tmp = path + ".tmp"
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "dataset": args.dataset}, tmp)
    os.replace(tmp, path)


def train(args, log=print) -> dict:
    """Everything the command does; returns the test scores and timings."""
    kind, _ = datasets.parse_spec(args.dataset)
    recipe = RECIPES[kind]
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    log(f"device: {device}" + ("" if device.type == "cuda" else " (PyTorch sees no GPU)"))
    train_records, labels = datasets.read(args.dataset, "train", recipe.subject)
    test_records, _ = datasets.read(args.dataset, "test", recipe.subject)
    val_records = None
    if recipe.task == "multi_label":
        try:
            val_records, _ = datasets.read(args.dataset, "val", recipe.subject)
        except DatasetError:
            val_records = None
    os.makedirs(args.checkpoints, exist_ok=True)
    if kind == "caer-s":
        cache = os.path.join(args.checkpoints, "faces.json")
        train_records, miss_train = find_faces(train_records, args.detector_bundle, cache, log)
        test_records, miss_test = find_faces(test_records, args.detector_bundle, cache, log)
        log(f"faces found: train {len(train_records)} (none in {miss_train}), test {len(test_records)} "
            f"(none in {miss_test}): pictures without a face are left out")
    if args.limit:
        train_records = train_records[: args.limit]
    k = len(labels)
    model = CLEF(recipe.vanilla(k), models.context_branch(k, args.context_bound), k, fusion=args.fusion,
                 task=recipe.task)
    if args.weights:
        load_weights(model.vanilla, args.weights, log)
    else:
        log("weights: none given (--weights FILE): the models start from scratch")
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    start = 0
    last = os.path.join(args.checkpoints, "last.pt")
    if args.resume and os.path.exists(last):
        ckpt = torch.load(last, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["epoch"]
        log(f"resumed from {last} after epoch {start}")
    data = Crops(train_records, recipe, k, jitter=True, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    epoch_s = []
    for epoch in range(start, args.epochs):
        data.epoch = epoch
        gen.manual_seed(args.seed + epoch)
        loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, generator=gen,
                                             num_workers=args.workers, drop_last=len(data) > args.batch)
        model.train()
        t0, seen, total = time.time(), 0, 0.0
        for b, (vanilla, context, target) in enumerate(loader, start=1):
            out = model(tuple(t.to(device) for t in vanilla), tuple(t.to(device) for t in context))
            loss = clef_loss(model, out, target.to(device), kl_weight=args.kl_weight)
            opt.zero_grad()
            loss.total.backward()
            opt.step()
            seen += len(target)
            total += float(loss.total) * len(target)
            if b % args.log_every == 0:
                log(f"epoch {epoch + 1}/{args.epochs} batch {b}/{len(loader)}: loss {float(loss.total):.3f}, "
                    f"{seen / (time.time() - t0):.0f} samples/s")
        epoch_s.append(time.time() - t0)
        save_checkpoint(last, model, opt, epoch + 1, args)
        log(f"epoch {epoch + 1}/{args.epochs}: mean loss {total / max(1, seen):.3f}, {epoch_s[-1]:.1f} s "
            f"({seen} samples), checkpoint {last}")
    test = Crops(test_records, recipe, k, jitter=False, seed=args.seed)
    result = score(model, test, device, args.batch)
    for view in ("vanilla", "factual", "debiased"):
        r = result[view]
        log(f"test {view:8}: " + (f"mAP {r['map']:.2f} %" if "map" in r else f"accuracy {r['accuracy']:.2f} %"))
    thresholds = None
    if recipe.task == "multi_label":
        tuned = Crops(val_records or test_records, recipe, k, jitter=False, seed=args.seed)
        thresholds = thresholds_for(model, tuned, device, args.batch)
    detector, detector_file = detector_of(args.detector_bundle)
    model.cpu()
    export_bundle(args.out, model, name=args.name or f"{kind}-clef", version="1.0.0", labels=labels,
                  description=recipe.description, vanilla_inputs=recipe.vanilla_inputs,
                  context_inputs=recipe.context_inputs, detector={k_: v for k_, v in detector.items() if k_ != "file"},
                  detector_file=detector_file, subject=recipe.subject, thresholds=thresholds, fused=True)
    summary = {"dataset": args.dataset, "device": device.type, "train": len(train_records), "test": len(test_records),
               "epochs": args.epochs, "seconds_per_epoch": [round(s, 2) for s in epoch_s],
               "test_scores": {v: {k_: x for k_, x in result[v].items() if k_ != "confusion"}
                               for v in ("vanilla", "factual", "debiased")}}
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    log(f"exported {args.out}")
    return summary


def parser() -> argparse.ArgumentParser:
    here = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    p = argparse.ArgumentParser(prog="python -m clef_kit.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="caer-s:DIR or emotic:DIR, in the layouts they come in")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", help="bundle name (default: caer-s-clef / emotic-clef)")
    p.add_argument("--checkpoints", help="checkpoint folder (default: OUT.checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--weights", help="local state_dict to seed the vanilla model (nothing is downloaded)")
    p.add_argument("--detector-bundle", default=os.path.join(here, "face-fer2013"),
                   help="bundle whose face detector finds faces and ships in the export")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1.0)
    p.add_argument("--fusion", default="sum", choices=["sum", "hm", "rubi"])
    p.add_argument("--context-bound", type=float, default=3.0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu"], help="auto: CUDA when PyTorch sees a GPU")
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--limit", type=int, default=0, help="train on the first N subjects only (0: all)")
    p.add_argument("--log-every", type=int, default=50, help="batches between progress lines")
    p.add_argument("--seed", type=int, default=7)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    args.checkpoints = args.checkpoints or args.out.rstrip("/") + ".checkpoints"
    try:
        train(args, log=lambda m: print(m, flush=True))
    except DatasetError as e:
        print(f"clef_kit.train: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
