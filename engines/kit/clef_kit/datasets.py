"""CAER-S and EMOTIC as they are distributed, read into :class:`Record` lists.

Both datasets are gated (we cannot ship them): these readers take the folders their users
download, in the layouts the datasets come in.

- **CAER-S**: ``DIR/train/`` and ``DIR/test/``, each with one folder per class (``Angry``,
  ``Disgust``, ``Fear``, ``Happy``, ``Neutral``, ``Sad``, ``Surprise``) of pictures. No face
  boxes: :mod:`clef_kit.faces` finds them with the daemon's detector.
- **EMOTIC**, original: ``DIR/Annotations/Annotations.mat`` (struct arrays ``train``, ``val``,
  ``test``; each entry a picture with ``filename``, ``folder``, ``image_size`` and ``person``,
  each person a ``body_bbox`` ``[x1 y1 x2 y2]`` and categories: ``annotations_categories`` for
  ``train``, ``combined_categories`` for ``val``/``test``) and the pictures under
  ``DIR/emotic/<folder>/<filename>``.
- **EMOTIC**, preprocessed (the widely used ``mat2py.py`` output): ``DIR/emotic_pre/<split>.csv``
  (``Index,Folder,Filename,Image Size,BBox,Categorical_Labels,...``) with the pictures under
  ``DIR/emotic/``, or, where those are absent, the arrays ``<split>_context_arr.npy`` (the
  whole picture at 224×224) beside the CSV.

A record's crops are then built exactly as the daemon builds them (:mod:`clef_kit.sampling`):
the subject is a face box; for EMOTIC it is the face box whose body box (``[subject]``'s
``body_width``/``body_height``) is the annotated one, so the body crop is that box.
"""

from __future__ import annotations

import ast
import csv
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .sampling import SubjectSpec

CAER_S_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]

EMOTIC_CATEGORIES = [
    "Affection", "Anger", "Annoyance", "Anticipation", "Aversion", "Confidence", "Disapproval", "Disconnection",
    "Disquietment", "Doubt/Confusion", "Embarrassment", "Engagement", "Esteem", "Excitement", "Fatigue", "Fear",
    "Happiness", "Pain", "Peace", "Pleasure", "Sadness", "Sensitivity", "Suffering", "Surprise", "Sympathy",
    "Yearning",
]

PICTURES = (".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """A dataset that is not in the layout it claims, naming the file at fault."""


@dataclass
class Record:
    """One labelled subject: where its picture is, its labels, and its box."""

    path: str
    labels: tuple[int, ...]
    face: tuple | None = None  # (x, y, w, h) pixels; None until found (CAER-S)
    array: np.ndarray | None = None  # the picture itself, when it comes in an array (EMOTIC .npy)

    def image(self) -> np.ndarray:
        """The picture, H×W×3 uint8 RGB."""
        if self.array is not None:
            return self.array
        try:
            with Image.open(self.path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as e:
            raise DatasetError(f"{self.path}: cannot read the picture ({e})") from e


def parse_spec(spec: str) -> tuple[str, str]:
    """``caer-s:DIR`` or ``emotic:DIR`` → (kind, DIR)."""
    kind, sep, root = spec.partition(":")
    if not sep or kind not in ("caer-s", "emotic") or not root:
        raise DatasetError(f"--dataset {spec!r}: use caer-s:DIR or emotic:DIR")
    return kind, root


def read(spec: str, split: str, subject: SubjectSpec | None = None) -> tuple[list[Record], list[str]]:
    """The records of ``split`` (``train``/``val``/``test``) and the labels, for a ``--dataset``."""
    kind, root = parse_spec(spec)
    if kind == "caer-s":
        return read_caer_s(root, split), [c.lower() for c in CAER_S_CLASSES]
    return read_emotic(root, split, subject or SubjectSpec()), list(EMOTIC_CATEGORIES)


def read_caer_s(root: str, split: str) -> list[Record]:
    """Every picture of ``root/<split>/<Class>/``, labelled by its folder."""
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: no such folder: CAER-S has train/ and test/, each with one folder per "
                           f"class ({', '.join(CAER_S_CLASSES)})")
    names = sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)))
    if not names:
        raise DatasetError(f"{folder}: no class folders ({', '.join(CAER_S_CLASSES)})")
    records = []
    for name in names:
        if name not in CAER_S_CLASSES:
            raise DatasetError(f"{os.path.join(folder, name)}: '{name}' is not a CAER-S class "
                               f"({', '.join(CAER_S_CLASSES)})")
        label = CAER_S_CLASSES.index(name)
        class_dir = os.path.join(folder, name)
        for f in sorted(os.listdir(class_dir)):
            if f.lower().endswith(PICTURES):
                records.append(Record(os.path.join(class_dir, f), (label,)))
    if not records:
        raise DatasetError(f"{folder}: the class folders hold no .png or .jpg pictures")
    return records


def face_for_body(body: tuple, subject: SubjectSpec) -> tuple:
    """The face box whose body box (as the daemon derives it) is ``body``."""
    bx, by, bw, bh = (float(v) for v in body)
    w, h = bw / subject.body_width, bh / subject.body_height
    return (bx + bw / 2 - w / 2, by + h / 2, w, h)


def _categories(names, source: str) -> tuple[int, ...]:
    out = []
    for n in names:
        if n not in EMOTIC_CATEGORIES:
            raise DatasetError(f"{source}: '{n}' is not one of EMOTIC's 26 categories")
        out.append(EMOTIC_CATEGORIES.index(n))
    return tuple(sorted(set(out)))


def read_emotic(root: str, split: str, subject: SubjectSpec) -> list[Record]:
    """Every annotated person of ``split``, from the original or the preprocessed layout."""
    for mat in (os.path.join(root, "Annotations", "Annotations.mat"), os.path.join(root, "Annotations.mat")):
        if os.path.exists(mat):
            return _read_emotic_mat(mat, root, split, subject)
    for pre in (os.path.join(root, "emotic_pre"), root):
        if os.path.exists(os.path.join(pre, f"{split}.csv")):
            return _read_emotic_csv(pre, root, split, subject)
    raise DatasetError(f"{root}: not an EMOTIC folder: expected Annotations/Annotations.mat (original) or "
                       f"emotic_pre/{split}.csv (mat2py.py's preprocessed layout)")


def _picture(root: str, folder: str, filename: str) -> str:
    for base in (os.path.join(root, "emotic"), root):
        p = os.path.join(base, folder, filename)
        if os.path.exists(p):
            return p
    return os.path.join(root, "emotic", folder, filename)


def _listed(v) -> list:
    """A MATLAB value loaded with ``squeeze_me``: one element comes back bare."""
    if v is None:
        return []
    if isinstance(v, np.ndarray):
        return list(v.ravel())
    return [v]


def _read_emotic_mat(path: str, root: str, split: str, subject: SubjectSpec) -> list[Record]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    if split not in mat:
        raise DatasetError(f"{path}: no '{split}' struct array (EMOTIC's has train, val and test)")
    records = []
    for i, entry in enumerate(_listed(mat[split])):
        where = f"{path}: {split}({i + 1})"
        try:
            filename, folder, people = str(entry.filename), str(entry.folder), _listed(entry.person)
        except AttributeError as e:
            raise DatasetError(f"{where}: missing field ({e})") from e
        for j, person in enumerate(people):
            who = f"{where}.person({j + 1})"
            box = np.asarray(getattr(person, "body_bbox", []), dtype=np.float64).ravel()
            if box.size != 4:
                raise DatasetError(f"{who}: body_bbox must be [x1 y1 x2 y2]")
            if hasattr(person, "combined_categories"):
                names = [str(n) for n in _listed(person.combined_categories)]
            else:
                names = [str(n) for a in _listed(person.annotations_categories) for n in _listed(a.categories)]
            body = (box[0], box[1], box[2] - box[0], box[3] - box[1])
            records.append(Record(_picture(root, folder, filename), _categories(names, who),
                                  face_for_body(body, subject)))
    return records


def _read_emotic_csv(pre: str, root: str, split: str, subject: SubjectSpec) -> list[Record]:
    path = os.path.join(pre, f"{split}.csv")
    arrays = os.path.join(pre, f"{split}_context_arr.npy")
    context = None
    records = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"Folder", "Filename", "Image Size", "BBox", "Categorical_Labels"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))} (mat2py.py writes "
                               "Index,Folder,Filename,Image Size,BBox,Categorical_Labels,...)")
        for row_no, row in enumerate(reader, start=2):
            where = f"{path}: row {row_no}"
            try:
                size = [float(v) for v in ast.literal_eval(row["Image Size"])]
                x1, y1, x2, y2 = (float(v) for v in ast.literal_eval(row["BBox"]))
                names = ast.literal_eval(row["Categorical_Labels"])
            except (ValueError, SyntaxError, TypeError) as e:
                raise DatasetError(f"{where}: cannot parse Image Size/BBox/Categorical_Labels ({e})") from e
            body = (x1, y1, x2 - x1, y2 - y1)
            picture = _picture(root, row["Folder"], row["Filename"])
            record = Record(picture, _categories(names, where), face_for_body(body, subject))
            if not os.path.exists(picture):
                # The pictures are not there: read the whole-picture array instead (224×224).
                if context is None:
                    if not os.path.exists(arrays):
                        raise DatasetError(f"{where}: neither the picture {picture} nor {arrays} exists")
                    context = np.load(arrays, mmap_mode="r")
                k = row_no - 2
                if k >= len(context):
                    raise DatasetError(f"{arrays}: {len(context)} pictures but {path} has more rows")
                image = np.asarray(context[k], dtype=np.uint8)
                sx, sy = image.shape[1] / size[0], image.shape[0] / size[1]
                record.array = image
                record.face = face_for_body((x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy), subject)
            records.append(record)
    if not records:
        raise DatasetError(f"{path}: no rows")
    return records
