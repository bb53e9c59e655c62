"""Datasets on disk, in the layout ``clefd eval --dataset DIR`` reads.

``DIR/index.csv`` has a header and one row per picture: ``file,label,x,y,w,h`` (the face box
in pixels, as a detector would give it), optionally followed by more columns the daemon
ignores (here ``scene``). Pictures are PNG files next to it (lossless, so the kit and the
daemon see the same pixels).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import world


@dataclass
class Item:
    """One row of ``index.csv`` with its picture loaded (H×W×3 uint8 RGB)."""

    file: str
    label: int
    box: tuple
    scene: int
    image: np.ndarray
    labels: tuple = ()  # every label (multi-label datasets: `a;b` in index.csv)


def write_split(out_dir: str, split: str, n: int, seed: int, size=(192, 144), difficulty: float = 1.0) -> None:
    """Renders ``n`` pictures of ``split`` into ``out_dir`` with their ``index.csv``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "x", "y", "w", "h", "scene"])
        for i, s in enumerate(world.sample_split(split, n, seed, size, difficulty=difficulty)):
            name = f"{i:05d}.png"
            s.image.save(os.path.join(out_dir, name), optimize=True)
            w.writerow([name, world.LABELS[s.label], *(f"{v:.2f}" for v in s.box), world.SCENES[s.scene]])


def read_split(dir: str, labels=world.LABELS) -> list[Item]:
    """Every item of a dataset folder; unknown labels are an error naming file and row."""
    path = os.path.join(dir, "index.csv")
    items = []
    with open(path, newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), start=2):
            names = [n for n in row["label"].split(";") if n]
            for name in names:
                if name not in labels:
                    raise ValueError(f"{path}: row {row_no}: label '{name}' is not one of {labels}")
            scene = world.SCENES.index(row["scene"]) if row.get("scene") in world.SCENES else -1
            image = np.asarray(Image.open(os.path.join(dir, row["file"])).convert("RGB"))
            box = tuple(float(row[k]) for k in ("x", "y", "w", "h"))
            indices = tuple(labels.index(n) for n in names)
            items.append(Item(row["file"], indices[0] if indices else -1, box, scene, image, indices))
    return items
