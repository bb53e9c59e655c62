"""A procedural world where context bias is known and measured.

People with cartoon faces show one of CAER-S's seven expressions on scenes of seven kinds.
In the ``biased`` split each scene kind goes with one expression most of the time (the
shortcut a model can learn instead of reading the face); in ``balanced`` the scene is
independent of the expression; in ``anti`` the scene never matches the expression. A model
that leans on the scene does well on ``biased`` and badly on ``anti``: the gap is the bias.

Everything is drawn from a seed (no downloads), with PIL and NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Bumped whenever the drawing changes (keys the kit's cache of rendered training data).
VERSION = 2

#: CAER-S's labels, in the bundle's output order.
LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]

#: Scene kind ``k`` is the one that goes with expression ``LABELS[k]`` in the biased split.
SCENES = ["red_stripes", "green_checker", "night_dots", "sunny", "grey_grid", "blue_rain", "purple_shapes"]

SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (150, 98, 66), (105, 68, 45), (80, 52, 36)]
HAIR = [(30, 25, 20), (90, 60, 30), (200, 170, 90), (140, 40, 20), (120, 120, 120), (20, 20, 20)]

#: How the splits tie the scene to the expression: probability that the scene matches.
SPLITS = {"biased": 0.9, "balanced": None, "anti": 0.0}


@dataclass
class Sample:
    """One rendered picture: the image, the face box (pixels x, y, w, h) and the truth."""

    image: Image.Image
    box: tuple[float, float, float, float]
    label: int
    scene: int


def scene_for(label: int, split: str, rng: np.random.Generator, match: float | None = None) -> int:
    """Picks the scene kind for a person showing ``label`` under the split's correlation."""
    p = SPLITS[split] if match is None else match
    if p is None:
        return int(rng.integers(len(SCENES)))
    if rng.random() < p:
        return label
    others = [k for k in range(len(SCENES)) if k != label]
    return int(rng.choice(others))


def _jitter(colour, rng, amount=30):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def draw_scene(kind: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A background of the given kind: colours, a texture and objects that identify it."""
    w, h = size
    name = SCENES[kind]
    img = Image.new("RGB", size)
    d = ImageDraw.Draw(img)
    if name == "red_stripes":
        a, b = _jitter((200, 40, 40), rng), _jitter((250, 140, 60), rng)
        d.rectangle([0, 0, w, h], fill=a)
        step = int(rng.integers(10, 22))
        for x in range(-h, w + h, step):
            d.polygon([(x, 0), (x + step // 2, 0), (x + step // 2 + h, h), (x + h, h)], fill=b)
    elif name == "green_checker":
        a, b = _jitter((40, 140, 60), rng), _jitter((150, 210, 120), rng)
        step = int(rng.integers(10, 24))
        for y in range(0, h, step):
            for x in range(0, w, step):
                d.rectangle([x, y, x + step, y + step], fill=a if (x // step + y // step) % 2 else b)
    elif name == "night_dots":
        d.rectangle([0, 0, w, h], fill=_jitter((15, 20, 60), rng, 15))
        for _ in range(int(rng.integers(30, 70))):
            x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(1, 3)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter((240, 240, 200), rng, 15))
        mx, my, mr = rng.integers(0, w), rng.integers(0, h // 3), rng.integers(8, 16)
        d.ellipse([mx - mr, my - mr, mx + mr, my + mr], fill=(235, 235, 210))
    elif name == "sunny":
        top, bottom = np.array(_jitter((110, 180, 250), rng)), np.array(_jitter((250, 230, 120), rng))
        t = np.linspace(0, 1, h)[:, None, None]
        grad = (top * (1 - t) + bottom * t).astype(np.uint8)
        img = Image.fromarray(np.repeat(grad, w, axis=1))
        d = ImageDraw.Draw(img)
        sx, sy, sr = rng.integers(0, w), rng.integers(0, h // 3), rng.integers(12, 22)
        d.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=(255, 220, 40))
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.integers(0, w), rng.integers(0, h // 2)
            for dx in (-10, 0, 10):
                d.ellipse([cx + dx - 9, cy - 7, cx + dx + 9, cy + 7], fill=(250, 250, 250))
    elif name == "grey_grid":
        d.rectangle([0, 0, w, h], fill=_jitter((150, 150, 155), rng, 20))
        step = int(rng.integers(12, 26))
        line = _jitter((90, 90, 95), rng, 15)
        for x in range(0, w, step):
            d.line([(x, 0), (x, h)], fill=line, width=2)
        for y in range(0, h, step):
            d.line([(0, y), (w, y)], fill=line, width=2)
    elif name == "blue_rain":
        d.rectangle([0, 0, w, h], fill=_jitter((40, 80, 160), rng, 20))
        for _ in range(int(rng.integers(60, 120))):
            x, y, ln = rng.integers(0, w), rng.integers(0, h), rng.integers(6, 14)
            d.line([(x, y), (x - 2, y + ln)], fill=_jitter((170, 200, 240), rng, 20), width=1)
    elif name == "purple_shapes":
        d.rectangle([0, 0, w, h], fill=_jitter((110, 50, 140), rng, 20))
        for _ in range(int(rng.integers(6, 14))):
            x, y, s = rng.integers(0, w), rng.integers(0, h), rng.integers(6, 18)
            d.polygon([(x, y - s), (x - s, y + s), (x + s, y + s)], fill=_jitter((230, 160, 230), rng, 25))
    # A few neutral objects on every kind, so the scene is not a flat colour.
    for _ in range(int(rng.integers(0, 3))):
        x, y, s = rng.integers(0, w), rng.integers(h // 2, h), rng.integers(8, 20)
        d.rectangle([x, y, x + s, y + s], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def _brow(d, cx, cy, half, inner_drop, outer_drop, side, colour, width):
    inner = (cx - side * half * 0.2, cy + inner_drop)
    outer = (cx + side * half, cy + outer_drop)
    d.line([inner, outer], fill=colour, width=width)


def draw_face(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, label: int, skin, hair, rng) -> None:
    """A cartoon head of width ``s`` centred at (cx, cy) showing ``LABELS[label]``."""
    name = LABELS[label]
    hw, hh = s / 2, s * 0.6
    outline = tuple(int(c * 0.6) for c in skin)
    d.ellipse([cx - hw, cy - hh, cx + hw, cy + hh], fill=skin, outline=outline, width=max(1, int(s / 30)))
    if hair is not None:
        d.chord([cx - hw, cy - hh, cx + hw, cy + hh * 0.2], 180, 360, fill=hair)
    lw = max(1, int(round(s / 18)))
    dark = (40, 25, 20)
    ex, ey = s * 0.2, cy - hh * 0.05
    eye_w, eye_h = s * 0.09, s * 0.07
    pupil = s * 0.04
    if name in ("surprise", "fear"):
        eye_w, eye_h = s * 0.11, s * 0.11
    if name in ("angry", "disgust"):
        eye_h = s * 0.04
    if name == "happy":
        eye_h = s * 0.06
    for side in (-1, 1):
        x = cx + side * ex
        d.ellipse([x - eye_w, ey - eye_h, x + eye_w, ey + eye_h], fill=(250, 250, 250), outline=dark, width=1)
        p = min(pupil, eye_h)
        d.ellipse([x - p, ey - p, x + p, ey + p], fill=dark)
    by = ey - s * 0.17
    brow = {
        "angry": (s * 0.09, -s * 0.05),
        "disgust": (s * 0.06, -s * 0.02),
        "fear": (-s * 0.09, s * 0.0),
        "happy": (-s * 0.02, -s * 0.02),
        "neutral": (0.0, 0.0),
        "sad": (-s * 0.08, s * 0.04),
        "surprise": (-s * 0.08, -s * 0.08),
    }[name]
    for side in (-1, 1):
        inner, outer = brow
        if name == "disgust" and side == 1:
            inner, outer = -s * 0.03, -s * 0.06
        if name == "surprise":
            inner = outer = -s * 0.08
        _brow(d, cx + side * ex, by, s * 0.13, inner, outer, side, dark, lw)
    d.line([(cx, ey + s * 0.06), (cx - s * 0.03, ey + s * 0.2)], fill=outline, width=max(1, lw - 1))
    my, mw = cy + hh * 0.5, s * 0.22
    mouth = (120, 20, 30)
    if name == "happy":
        # A broad open smile with a row of teeth.
        d.chord([cx - mw * 1.15, my - s * 0.16, cx + mw * 1.15, my + s * 0.14], 0, 180, fill=mouth, outline=dark)
        d.rectangle([cx - mw * 0.8, my - s * 0.01, cx + mw * 0.8, my + s * 0.035], fill=(250, 250, 250))
    elif name == "sad":
        d.arc([cx - mw, my, cx + mw, my + s * 0.22], 200, 340, fill=dark, width=lw + 1)
        tx, ty = cx - ex + s * 0.03, ey + s * 0.1  # a tear under one eye
        d.ellipse([tx - s * 0.025, ty, tx + s * 0.025, ty + s * 0.07], fill=(90, 160, 240))
    elif name == "angry":
        d.rectangle([cx - mw * 0.8, my - s * 0.03, cx + mw * 0.8, my + s * 0.04], fill=(245, 245, 245), outline=dark)
        d.line([(cx - mw * 0.8, my + s * 0.005), (cx + mw * 0.8, my + s * 0.005)], fill=dark, width=1)
    elif name == "surprise":
        d.ellipse([cx - s * 0.08, my - s * 0.08, cx + s * 0.08, my + s * 0.1], fill=mouth, outline=dark)
    elif name == "fear":
        d.ellipse([cx - mw, my - s * 0.05, cx + mw, my + s * 0.07], fill=mouth, outline=dark)
        d.line([(cx - mw * 0.8, my - s * 0.01), (cx + mw * 0.8, my - s * 0.01)], fill=(245, 245, 245), width=lw)
    elif name == "disgust":
        pts = [(cx - mw, my + s * 0.03), (cx - mw * 0.3, my - s * 0.02), (cx + mw * 0.3, my + s * 0.03),
               (cx + mw, my - s * 0.07)]
        d.line(pts, fill=dark, width=lw + 1)
        # A wrinkled nose: two short slanted lines either side.
        for side in (-1, 1):
            d.line([(cx + side * s * 0.05, ey + s * 0.08), (cx + side * s * 0.11, ey + s * 0.14)], fill=dark,
                   width=max(1, lw - 1))
        # Green-tinged cheeks, the cartoon's "yuck".
        for side in (-1, 1):
            gx, gy = cx + side * s * 0.28, my - s * 0.08
            d.ellipse([gx - s * 0.07, gy - s * 0.04, gx + s * 0.07, gy + s * 0.04], fill=(140, 190, 90))
    else:  # neutral
        d.line([(cx - mw * 0.8, my), (cx + mw * 0.8, my)], fill=dark, width=lw + 1)


def draw_person(img: Image.Image, cx: float, cy: float, s: float, label: int, rng: np.random.Generator):
    """A person (torso, neck, head) on ``img``; returns the face box (x, y, w, h) in pixels."""
    skin = _jitter(SKIN[int(rng.integers(len(SKIN)))], rng, 10)
    hair = HAIR[int(rng.integers(len(HAIR)))] if rng.random() < 0.8 else None
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    d = ImageDraw.Draw(img)
    hh = s * 0.6
    d.rectangle([cx - s * 0.15, cy + hh * 0.8, cx + s * 0.15, cy + hh * 1.3], fill=skin)
    d.rounded_rectangle([cx - s * 0.9, cy + hh * 1.2, cx + s * 0.9, cy + hh * 4.0], radius=int(s * 0.3), fill=shirt)
    draw_face(d, cx, cy, s, label, skin, hair, rng)
    return face_box(cx, cy, s)


def face_box(cx: float, cy: float, s: float) -> tuple[float, float, float, float]:
    """The box a face detector draws around a head of width ``s`` centred at (cx, cy).

    BlazeFace's boxes are square, slightly narrower than the head and centred a little below
    its middle (measured on rendered heads: side 0.88-0.97 s, centre 0.09-0.13 s lower).
    Training on the same convention keeps crops alike in training and in the daemon.
    """
    side = 0.92 * s
    return (cx - side / 2, cy + 0.11 * s - side / 2, side, side)


def picture(scene: int, draw, rng: np.random.Generator, size=(192, 144), difficulty: float = 1.0):
    """A person drawn by ``draw(img, cx, cy, s, rng)`` (which returns the face box) on a scene
    of kind ``scene``; returns the picture and the face box. Shared by both worlds.

    Faces vary in skin tone, size, position and hair; they are also blurred (up to
    1.2·difficulty px) and noisy (σ up to 10·difficulty), so that reading the face takes
    more than reading the scene does. ``difficulty = 0`` draws clean pictures.
    """
    w, h = size
    ss = 2  # draw at twice the size and downsample: smooth edges, like a camera
    big = draw_scene(scene, (w * ss, h * ss), rng)
    s = float(rng.uniform(0.17, 0.3)) * h * ss
    cx = float(rng.uniform(s, w * ss - s))
    cy = float(rng.uniform(s * 0.8, h * ss - s * 1.2))
    box = draw(big, cx, cy, s, rng)
    img = big.resize(size, Image.BILINEAR)
    box = tuple(v / ss for v in box)
    if difficulty > 0:
        blur = float(rng.uniform(0.0, 1.2 * difficulty))
        if blur > 0.2:
            img = img.filter(ImageFilter.GaussianBlur(blur))
        sigma = float(rng.uniform(0.0, 10.0 * difficulty))
        arr = np.asarray(img).astype(np.float32) + rng.normal(0.0, sigma, (h, w, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img, box


def render(label: int, scene: int, rng: np.random.Generator, size=(192, 144), difficulty: float = 1.0) -> Sample:
    """One picture of a person showing ``label`` on a scene of kind ``scene`` (:func:`picture`)."""
    img, box = picture(scene, lambda im, cx, cy, s, r: draw_person(im, cx, cy, s, label, r), rng, size, difficulty)
    return Sample(img, box, label, scene)


def sample_split(split: str, n: int, seed: int, size=(192, 144), match: float | None = None,
                 difficulty: float = 1.0):
    """``n`` pictures of ``split``, expressions balanced, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % len(LABELS)
        yield render(label, scene_for(label, split, rng, match), rng, size, difficulty)


def clip_frames(n_frames: int, seed: int, size=(256, 192), segment=30):
    """Frames of a clip: one person at a time, each held for ``segment`` frames while drifting
    across a scene that never matches the expression (the anti setting). Yields
    ``(image, box, label, scene)`` per frame."""
    def pick(person: int, rng):
        label = person % len(LABELS)
        return label, scene_for(label, "anti", rng)

    return drifting_clip(n_frames, seed, size, segment, pick, draw_person)


def drifting_clip(n_frames: int, seed: int, size, segment: int, pick, draw):
    """One person after another, each drifting across a still scene for ``segment`` frames.
    ``pick(person, rng)`` gives the person's truth and scene; ``draw(img, cx, cy, s, truth,
    rng)`` draws them and returns the face box. Yields ``(image, box, truth, scene)``."""
    rng = np.random.default_rng(seed)
    w, h = size
    frame = 0
    person = 0
    while frame < n_frames:
        truth, scene = pick(person, rng)
        person += 1
        bg_seed = int(rng.integers(1 << 31))
        face_seed = int(rng.integers(1 << 31))
        s = float(rng.uniform(0.2, 0.28)) * h
        x0, x1 = float(rng.uniform(s, w / 2)), float(rng.uniform(w / 2, w - s))
        cy = float(rng.uniform(s * 0.9, h - s * 1.3))
        for t in range(segment):
            if frame >= n_frames:
                break
            img = draw_scene(scene, size, np.random.default_rng(bg_seed))
            cx = x0 + (x1 - x0) * t / max(1, segment - 1) + 2.0 * math.sin(t / 3)
            box = draw(img, cx, cy, s, truth, np.random.default_rng(face_seed))
            yield img, box, truth, scene
            frame += 1
