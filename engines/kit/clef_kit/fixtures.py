"""Small stand-ins for CAER-S and EMOTIC, written in the layouts the real ones come in.

The real datasets are gated; tests (and anyone checking the readers before the download
finishes) use these. Pictures come from the context-bias worlds, so faces are found by the
detector and labels are learnable:

    python -m clef_kit.fixtures caer-s DIR --per-class 100
    python -m clef_kit.fixtures emotic DIR --layout mat|csv --people 60

CAER-S: ``DIR/{train,test}/<Class>/NNNN.png``. EMOTIC: pictures under
``DIR/emotic/<folder>/``, and either ``DIR/Annotations/Annotations.mat`` (MATLAB struct arrays
as the original has them) or ``DIR/emotic_pre/<split>.csv`` plus ``<split>_context_arr.npy``
(``mat2py.py``'s preprocessed layout).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from . import multi_world, world
from .datasets import CAER_S_CLASSES
from .sampling import SubjectSpec, subject_boxes

#: The multi-label world's states under their EMOTIC names.
EMOTIC_NAMES = {"happiness": "Happiness", "anger": "Anger", "sadness": "Sadness", "surprise": "Surprise",
                "embarrassment": "Embarrassment", "fatigue": "Fatigue"}


def write_caer_s(root: str, per_class: int = 2, test_per_class: int = 1, seed: int = 3) -> None:
    """``per_class`` training and ``test_per_class`` test pictures of each class."""
    for split, n, s in (("train", per_class, seed), ("test", test_per_class, seed + 1)):
        samples = world.sample_split("balanced", n * len(CAER_S_CLASSES), s)
        for i, sample in enumerate(samples):
            folder = os.path.join(root, split, CAER_S_CLASSES[sample.label])
            os.makedirs(folder, exist_ok=True)
            sample.image.save(os.path.join(folder, f"{i:04d}.png"))


def _people(split: str, n: int, seed: int, subject: SubjectSpec):
    """(file name, picture, body box x1 y1 x2 y2, EMOTIC names) of ``n`` pictures."""
    for i, s in enumerate(multi_world.sample_split("balanced", n, seed, size=(224, 168))):
        x, y, w, h = (float(v) for v in subject_boxes(s.box, subject)["body"])
        ih, iw = np.asarray(s.image).shape[:2]
        box = [max(0.0, x), max(0.0, y), min(float(iw), x + w), min(float(ih), y + h)]
        yield f"{split}_{i:04d}.jpg", s.image, [round(v) for v in box], [EMOTIC_NAMES[multi_world.LABELS[k]]
                                                                          for k in s.labels]


def _struct(**fields):
    """A 1×1 MATLAB struct for ``scipy.io.savemat``."""
    a = np.empty((1, 1), dtype=[(k, "O") for k in fields])
    for k, v in fields.items():
        a[0, 0][k] = v
    return a


def _struct_array(items: list[dict]):
    a = np.empty((1, len(items)), dtype=[(k, "O") for k in items[0]])
    for i, fields in enumerate(items):
        for k, v in fields.items():
            a[0, i][k] = v
    return a


def _cell(strings: list[str]):
    c = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        c[0, i] = s
    return c


def write_emotic(root: str, layout: str = "mat", people: int = 12, seed: int = 5) -> None:
    """``people`` pictures for train and a third as many for val and test, one person each."""
    subject = SubjectSpec()
    folder = "fixture/images"
    os.makedirs(os.path.join(root, "emotic", folder), exist_ok=True)
    splits = {"train": people, "val": max(3, people // 3), "test": max(3, people // 3)}
    tables = {}
    for k, (split, n) in enumerate(splits.items()):
        rows = []
        for name, image, box, names in _people(split, n, seed + k, subject):
            image.save(os.path.join(root, "emotic", folder, name), quality=95)
            rows.append((name, image, box, names))
        tables[split] = rows
    if layout == "mat":
        from scipy.io import savemat

        mat = {}
        for split, rows in tables.items():
            entries = []
            for name, image, box, names in rows:
                cont = _struct(valence=5.0, arousal=5.0, dominance=5.0)
                if split == "train":
                    person = _struct_array([dict(body_bbox=np.array(box, float), annotations_categories=_struct(
                        categories=_cell(names)), annotations_continuous=cont, gender="Male", age="Adult")])
                else:
                    person = _struct_array([dict(
                        body_bbox=np.array(box, float),
                        annotations_categories=_struct_array([{"categories": _cell(names)}] * 2),
                        combined_categories=_cell(names), annotations_continuous=cont, combined_continuous=cont,
                        gender="Female", age="Adult")])
                entries.append(dict(filename=name, folder=folder,
                                    image_size=_struct(n_col=float(image.width), n_row=float(image.height)),
                                    original_database=_struct(name="fixture"), person=person))
            mat[split] = _struct_array(entries)
        os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
        savemat(os.path.join(root, "Annotations", "Annotations.mat"), mat, do_compression=True)  # as MATLAB -v7 saves
        return
    pre = os.path.join(root, "emotic_pre")
    os.makedirs(pre, exist_ok=True)
    for split, rows in tables.items():
        with open(os.path.join(pre, f"{split}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Index", "Folder", "Filename", "Image Size", "BBox", "Categorical_Labels",
                        "Continuous_Labels", "Gender", "Age"])
            for i, (name, image, box, names) in enumerate(rows):
                w.writerow([i, folder, name, [image.width, image.height], box, names, [5, 5, 5], "Male", "Adult"])
        context = np.stack([np.asarray(image.resize((224, 224))) for _, image, _, _ in rows])
        np.save(os.path.join(pre, f"{split}_context_arr.npy"), context)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clef_kit.fixtures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["caer-s", "emotic"])
    p.add_argument("dir")
    p.add_argument("--per-class", type=int, default=2, help="CAER-S training pictures per class")
    p.add_argument("--layout", choices=["mat", "csv"], default="mat", help="EMOTIC layout")
    p.add_argument("--people", type=int, default=12, help="EMOTIC training pictures")
    a = p.parse_args(argv)
    if a.kind == "caer-s":
        write_caer_s(a.dir, a.per_class, max(1, a.per_class // 2))
    else:
        write_emotic(a.dir, a.layout, a.people)
    print(f"wrote {a.kind} fixture to {a.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
