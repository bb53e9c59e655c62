"""Face boxes for datasets that give none (CAER-S), found by the daemon's own detector.

``clefd faces --bundle B PICTURE...`` runs the bundle's detector with the daemon's letterbox
and decoding, so training crops are the crops the daemon will take in the field. The
largest face of a picture is its subject (as ``clefd eval`` decides). Results are cached in
a JSON file keyed by path, size and modification time, since finding faces in a large
dataset takes a while and training is often resumed.
"""

from __future__ import annotations

import json
import os
import subprocess

from .datasets import DatasetError, Record

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def clefd_binary() -> str:
    """``$CLEFD``, else the repository's release build, else ``clefd`` on the PATH."""
    for candidate in (os.environ.get("CLEFD"), os.path.join(ROOT, "target", "release", "clefd")):
        if candidate and os.path.exists(candidate):
            return candidate
    return "clefd"


def _key(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}"


def find_faces(records: list[Record], detector_bundle: str, cache: str | None = None, log=print,
               chunk: int = 256) -> tuple[list[Record], int]:
    """Sets ``face`` on every record without one; returns those with a face and the number
    of pictures in which the detector found none (left out, as ``clefd eval`` leaves them)."""
    known = {}
    if cache and os.path.exists(cache):
        with open(cache) as f:
            known = json.load(f)
    todo = [r for r in records if r.face is None and _key(r.path) not in known]
    exe = clefd_binary()
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        try:
            out = subprocess.run([exe, "faces", "--bundle", detector_bundle, *(r.path for r in part)],
                                 capture_output=True, text=True)
        except FileNotFoundError as e:
            raise DatasetError(f"cannot run clefd to find faces ({e}): build it (make build) or set CLEFD") from e
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if len(lines) != len(part):
            raise DatasetError(f"clefd faces failed: {out.stderr.strip() or 'no output'}")
        for r, line in zip(part, lines):
            if "error" in line:
                raise DatasetError(line["error"])
            faces = line["faces"]
            largest = max(faces, key=lambda f: f["box_px"][2] * f["box_px"][3]) if faces else None
            known[_key(r.path)] = largest["box_px"] if largest else None
        log(f"faces: {min(start + chunk, len(todo))}/{len(todo)} pictures searched")
        if cache:
            os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
            with open(cache, "w") as f:
                json.dump(known, f)
    found, missing = [], 0
    for r in records:
        if r.face is None:
            box = known.get(_key(r.path))
            if box is None:
                missing += 1
                continue
            r.face = tuple(box)
        found.append(r)
    return found, missing
