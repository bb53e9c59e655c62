"""The context-bias world, multi-label: a person shows one or two of six states at once.

EMOTIC-style labels are not exclusive: someone can be happy and embarrassed, or angry and
surprised. Here each state is one cue drawn in its own place on the face (a smile, slanted
brows, tears, wide eyes, blushing cheeks, tired eyelids), so any two combine on one face.
Scenes come from :mod:`clef_kit.world`: scene kind ``k`` goes with state ``LABELS[k]`` in
the ``biased`` split (with the split's probability the scene is that of one of the person's
states); in ``balanced`` the scene is independent of the states; in ``anti`` it never goes
with any of them. Scene kind 6 goes with no state.

Everything is drawn from a seed (no downloads), with PIL and NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from . import world

#: Bumped whenever the drawing changes (keys the kit's cache of rendered training data).
VERSION = 2

#: The six states, in the bundle's output order (a subset of EMOTIC's 26 categories).
LABELS = ["happiness", "anger", "sadness", "surprise", "embarrassment", "fatigue"]

#: Scene kinds, shared with the single-label world; kind ``k < 6`` goes with ``LABELS[k]``.
SCENES = world.SCENES

#: Pairs that cannot show on one face (wide-open eyes are not tired eyes).
EXCLUSIVE = {frozenset({"surprise", "fatigue"})}

#: Share of people who show two states.
TWO_STATES = 0.5


@dataclass
class Sample:
    """One rendered picture: the image, the face box (pixels x, y, w, h) and the truth."""

    image: Image.Image
    box: tuple[float, float, float, float]
    labels: tuple[int, ...]
    scene: int


def states_for(i: int, rng: np.random.Generator) -> tuple[int, ...]:
    """The states of person ``i``: ``LABELS[i % 6]``, and half the time a second one."""
    first = i % len(LABELS)
    if rng.random() >= TWO_STATES:
        return (first,)
    others = [k for k in range(len(LABELS))
              if k != first and frozenset({LABELS[k], LABELS[first]}) not in EXCLUSIVE]
    return tuple(sorted((first, int(rng.choice(others)))))


def scene_for(states: tuple[int, ...], split: str, rng: np.random.Generator, match: float | None = None) -> int:
    """The scene for a person showing ``states`` under the split's correlation."""
    p = world.SPLITS[split] if match is None else match
    if p is None:
        return int(rng.integers(len(SCENES)))
    if rng.random() < p:
        return int(rng.choice(states))
    return int(rng.choice([k for k in range(len(SCENES)) if k not in states]))


def draw_face(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, states: tuple[int, ...], skin, hair) -> None:
    """A cartoon head of width ``s`` centred at (cx, cy) showing every state in ``states``."""
    names = {LABELS[k] for k in states}
    hw, hh = s / 2, s * 0.6
    outline = tuple(int(c * 0.6) for c in skin)
    d.ellipse([cx - hw, cy - hh, cx + hw, cy + hh], fill=skin, outline=outline, width=max(1, int(s / 30)))
    if hair is not None:
        d.chord([cx - hw, cy - hh, cx + hw, cy + hh * 0.2], 180, 360, fill=hair)
    lw = max(1, int(round(s / 18)))
    dark = (40, 25, 20)
    ex, ey = s * 0.2, cy - hh * 0.05
    wide = "surprise" in names
    eye_w, eye_h = (s * 0.1, s * 0.095) if wide else (s * 0.09, s * 0.07)
    pupil = s * (0.035 if wide else 0.04)
    for side in (-1, 1):
        x = cx + side * ex
        d.ellipse([x - eye_w, ey - eye_h, x + eye_w, ey + eye_h], fill=(250, 250, 250), outline=dark, width=1)
        d.ellipse([x - pupil, ey - pupil, x + pupil, ey + pupil], fill=dark)
        if "fatigue" in names:
            # Heavy lids over the upper half of the eye and dark bags under it.
            d.chord([x - eye_w - 1, ey - eye_h - 1, x + eye_w + 1, ey + eye_h + 1], 180, 360, fill=skin,
                    outline=dark)
            d.arc([x - eye_w, ey + eye_h * 0.6, x + eye_w, ey + eye_h * 2.2], 20, 160, fill=(90, 60, 90),
                  width=lw)
        if "sadness" in names:
            tx, ty = x + side * eye_w * 0.7, ey + eye_h
            d.ellipse([tx - s * 0.02, ty, tx + s * 0.02, ty + s * 0.08], fill=(150, 185, 230))
        if "embarrassment" in names:
            gx, gy = cx + side * s * 0.3, cy + hh * 0.25
            d.ellipse([gx - s * 0.07, gy - s * 0.035, gx + s * 0.07, gy + s * 0.035],
                      fill=tuple(int(0.6 * c + 0.4 * p) for c, p in zip(skin, (240, 110, 130))))
    by = ey - s * (0.185 if wide else 0.17)
    for side in (-1, 1):
        x = cx + side * ex
        if "anger" in names:
            inner, outer, width = (x - side * s * 0.04, by + s * 0.05), (x + side * s * 0.13, by - s * 0.02), lw
        else:
            inner, outer, width = (x - side * s * 0.04, by), (x + side * s * 0.13, by), lw
        d.line([inner, outer], fill=dark, width=width)
    d.line([(cx, ey + s * 0.06), (cx - s * 0.03, ey + s * 0.2)], fill=outline, width=max(1, lw - 1))
    my, mw = cy + hh * 0.5, s * 0.22
    if "happiness" in names:
        d.chord([cx - mw * 1.15, my - s * 0.16, cx + mw * 1.15, my + s * 0.14], 0, 180, fill=(120, 20, 30),
                outline=dark)
        d.rectangle([cx - mw * 0.8, my - s * 0.01, cx + mw * 0.8, my + s * 0.035], fill=(250, 250, 250))
    else:
        d.line([(cx - mw * 0.8, my), (cx + mw * 0.8, my)], fill=dark, width=lw + 1)


def draw_person(img: Image.Image, cx: float, cy: float, s: float, states: tuple[int, ...], rng: np.random.Generator):
    """A person (torso, neck, head) on ``img``; returns the face box (x, y, w, h) in pixels."""
    skin = world._jitter(world.SKIN[int(rng.integers(len(world.SKIN)))], rng, 10)
    hair = world.HAIR[int(rng.integers(len(world.HAIR)))] if rng.random() < 0.8 else None
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    d = ImageDraw.Draw(img)
    hh = s * 0.6
    d.rectangle([cx - s * 0.15, cy + hh * 0.8, cx + s * 0.15, cy + hh * 1.3], fill=skin)
    d.rounded_rectangle([cx - s * 0.9, cy + hh * 1.2, cx + s * 0.9, cy + hh * 4.0], radius=int(s * 0.3), fill=shirt)
    draw_face(d, cx, cy, s, states, skin, hair)
    return world.face_box(cx, cy, s)


def render(states: tuple[int, ...], scene: int, rng: np.random.Generator, size=(192, 144),
           difficulty: float = 1.0) -> Sample:
    """One picture of a person showing ``states`` on a scene of kind ``scene``
    (:func:`clef_kit.world.picture`: the same sizes, blur and noise)."""
    img, box = world.picture(scene, lambda im, cx, cy, s, r: draw_person(im, cx, cy, s, states, r), rng, size,
                             difficulty)
    return Sample(img, box, states, scene)


def sample_split(split: str, n: int, seed: int, size=(192, 144), match: float | None = None,
                 difficulty: float = 1.0):
    """``n`` pictures of ``split``, every state first in turn, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        states = states_for(i, rng)
        yield render(states, scene_for(states, split, rng, match), rng, size, difficulty)


def clip_frames(n_frames: int, seed: int, size=(256, 192), segment=30):
    """Frames of an ``anti`` clip, one person at a time drifting for ``segment`` frames.
    Yields ``(image, box, states, scene)`` per frame."""
    def pick(person: int, rng):
        states = states_for(person, rng)
        return states, scene_for(states, "anti", rng)

    return world.drifting_clip(n_frames, seed, size, segment, pick, draw_person)
