"""Image → input tensor exactly as the daemon builds it (``src/engine/preprocess.rs`` and
``SubjectBoxes`` in ``src/engine/classifier.rs``), so a model is trained on the pixels it will
see in the field and the kit's evaluation matches ``clefd eval``.

Bilinear sampling with pixel centres at +0.5, clamped at the edges; parts of the region
outside the image, and pixels whose centre lies in the mask box, are black (0 before
normalisation). All arithmetic is float32, in the daemon's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROLES = ("face", "context_masked", "body", "scene")

Rect = tuple  # (x, y, w, h) in pixels


@dataclass
class InputSpec:
    """One model input as the manifest declares it (``[[vanilla.inputs]]``)."""

    name: str
    role: str
    width: int
    height: int
    colour: str = "RGB"  # RGB | BGR | GRAY
    layout: str = "NCHW"  # NCHW | NHWC
    mean: list = field(default_factory=lambda: [0.0])
    std: list = field(default_factory=lambda: [255.0])

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"input '{self.name}': unknown role '{self.role}', use one of {', '.join(ROLES)}")
        if self.colour not in ("RGB", "BGR", "GRAY") or self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"input '{self.name}': colour must be RGB/BGR/GRAY and layout NCHW/NHWC")

    @property
    def channels(self) -> int:
        return 1 if self.colour == "GRAY" else 3

    def shape(self, batch) -> tuple:
        c, h, w = self.channels, self.height, self.width
        return (batch, c, h, w) if self.layout == "NCHW" else (batch, h, w, c)

    def affine(self):
        """Per channel (scale, bias) with value = pixel·scale + bias, in float32."""
        def pick(v, i, d):
            return v[i] if i < len(v) else (v[0] if v else d)

        out = []
        for i in range(3):
            m, s = np.float32(pick(self.mean, i, 0.0)), np.float32(pick(self.std, i, 1.0))
            out.append((np.float32(1.0) / s, -m / s))
        return out


@dataclass
class SubjectSpec:
    """The manifest's ``[subject]``: how crops and the mask derive from the face box."""

    face_scale: float = 1.0
    body_width: float = 3.0
    body_height: float = 7.0
    mask: str = "face"  # face | body
    mask_scale: float = 1.0


def scaled(r: Rect, sx: float, sy: float) -> Rect:
    """The box scaled about its centre (float32, as the daemon's ``Rect::scaled``)."""
    x, y, w, h = (np.float32(v) for v in r)
    sx, sy = np.float32(sx), np.float32(sy)
    cx, cy = x + w / np.float32(2), y + h / np.float32(2)
    nw, nh = w * sx, h * sy
    return (cx - nw / np.float32(2), cy - nh / np.float32(2), nw, nh)


def subject_boxes(face: Rect, spec: SubjectSpec) -> dict:
    """``face`` crop, ``body`` box and ``mask`` box for a detected face box."""
    f32 = np.float32
    x, y, w, h = (f32(v) for v in face)
    crop = scaled(face, spec.face_scale, spec.face_scale)
    body_w = w * f32(spec.body_width)
    body = (x + w / f32(2) - body_w / f32(2), y - h / f32(2), body_w, h * f32(spec.body_height))
    mask = scaled(face, spec.mask_scale, spec.mask_scale) if spec.mask == "face" else body
    return {"face": crop, "body": body, "mask": mask}


def sample(image: np.ndarray, region: Rect, mask: Rect | None, spec: InputSpec) -> np.ndarray:
    """``region`` of ``image`` (H×W×3 uint8 RGB) as one sample of ``spec``'s tensor (no batch dim)."""
    f32 = np.float32
    ih, iw = image.shape[:2]
    ow, oh = spec.width, spec.height
    rx, ry, rw, rh = (f32(v) for v in region)
    step_x, step_y = rw / f32(ow), rh / f32(oh)
    cx = rx + (np.arange(ow, dtype=f32) + f32(0.5)) * step_x
    cy = ry + (np.arange(oh, dtype=f32) + f32(0.5)) * step_y
    fx = np.clip(cx - f32(0.5), f32(0), f32(iw - 1))
    fy = np.clip(cy - f32(0.5), f32(0), f32(ih - 1))
    x0 = np.floor(fx).astype(np.int64)
    y0 = np.floor(fy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, iw - 1), np.minimum(y0 + 1, ih - 1)
    wx, wy = (fx - x0.astype(f32))[None, :, None], (fy - y0.astype(f32))[:, None, None]
    img = image.astype(f32)
    r0, r1 = img[y0], img[y1]
    a = r0[:, x0] * (f32(1) - wx) + r0[:, x1] * wx
    b = r1[:, x0] * (f32(1) - wx) + r1[:, x1] * wx
    px = a * (f32(1) - wy) + b * wy
    visible = ((cy >= 0) & (cy < ih))[:, None] & ((cx >= 0) & (cx < iw))[None, :]
    if mask is not None:
        mx, my, mw, mh = (f32(v) for v in mask)
        inside = ((cy >= my) & (cy < my + mh))[:, None] & ((cx >= mx) & (cx < mx + mw))[None, :]
        visible &= ~inside
    if spec.colour == "GRAY":
        px = (f32(0.299) * px[..., 0] + f32(0.587) * px[..., 1] + f32(0.114) * px[..., 2])[..., None]
    elif spec.colour == "BGR":
        px = px[..., ::-1]
    aff = spec.affine()[: spec.channels]
    scale = np.array([s for s, _ in aff], dtype=f32)
    bias = np.array([b for _, b in aff], dtype=f32)
    out = np.where(visible[..., None], px * scale + bias, bias).astype(f32)
    return np.ascontiguousarray(out.transpose(2, 0, 1) if spec.layout == "NCHW" else out)


def build_input(image: np.ndarray, face: Rect, spec: InputSpec, subject: SubjectSpec) -> np.ndarray:
    """The tensor ``spec`` asks for, for the subject whose face box is ``face``."""
    boxes = subject_boxes(face, subject)
    ih, iw = image.shape[:2]
    whole = (0.0, 0.0, float(iw), float(ih))
    if spec.role == "face":
        return sample(image, boxes["face"], None, spec)
    if spec.role == "body":
        return sample(image, boxes["body"], None, spec)
    if spec.role == "scene":
        return sample(image, whole, None, spec)
    return sample(image, whole, boxes["mask"], spec)
