#!/usr/bin/env python3
"""The bar clefd is measured against: a straightforward Python pipeline on one camera.

OpenCV decodes an H.264 clip, BlazeFace full-range (ONNX Runtime) finds the best face,
the FER2013 model classifies its 64x64 grey crop; every frame, as fast as possible. Same
models and ONNX Runtime settings as clefd's demo bundle (intra-op spinning off, one
session per model, all graph optimisations). Prints frames/s and peak RSS.

    python3 -m venv /tmp/pybar && /tmp/pybar/bin/pip install onnxruntime opencv-python-headless
    clefd make-clip --seconds 10 --fps 30 --scale 0.75 --image assets/astronaut.png --out /tmp/clip.mp4
    /tmp/pybar/bin/python scripts/python-bar.py /tmp/clip.mp4 [--threads N]

Compare with `clefd bench --cameras 1 --unpaced` in the same sitting.
"""

import argparse
import resource
import time

import cv2
import numpy as np
import onnxruntime as ort

BUNDLE = "engines/face-fer2013"


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    det = session(f"{BUNDLE}/blazeface_full.onnx", args.threads)
    fer = session(f"{BUNDLE}/fer2013_mini_xception.onnx", args.threads)
    fer_in = fer.get_inputs()[0].name
    # MediaPipe full-range anchors: 48x48 cells, stride 4, centres in [0, 1].
    cells = (np.arange(48) + 0.5) / 48
    anchors = np.stack(np.meshgrid(cells, cells), -1).reshape(-1, 2).astype(np.float32)
    frames = faces = 0
    start = time.time()
    while time.time() - start < args.seconds:
        cap = cv2.VideoCapture(args.clip)
        while time.time() - start < args.seconds:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            s = 192 / max(w, h)
            small = cv2.resize(bgr, (round(w * s), round(h * s)))
            box = np.zeros((192, 192, 3), np.uint8)
            oy, ox = (192 - small.shape[0]) // 2, (192 - small.shape[1]) // 2
            box[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
            x = (cv2.cvtColor(box, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
            reg, score = det.run(["reshaped_regressor_face_4", "reshaped_classifier_face_4"], {"input": x})
            best = int(np.argmax(score[0, :, 0]))
            frames += 1
            if score[0, best, 0] < 0:  # logit of 0.5
                continue
            cx, cy = reg[0, best, 0] / 192 + anchors[best, 0], reg[0, best, 1] / 192 + anchors[best, 1]
            bw, bh = reg[0, best, 2] / 192 * 1.1, reg[0, best, 3] / 192 * 1.1
            to_px = lambda u, v: ((u * 192 - ox) / s, (v * 192 - oy) / s)  # noqa: E731
            (x0, y0), (x1, y1) = to_px(cx - bw / 2, cy - bh / 2), to_px(cx + bw / 2, cy + bh / 2)
            x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
            if x1 <= x0 or y1 <= y0:
                continue
            grey = cv2.cvtColor(bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
            face = (cv2.resize(grey, (64, 64)).astype(np.float32) / 127.5 - 1.0)[None, None]
            fer.run(None, {fer_in: face})
            faces += 1
    secs = time.time() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"python bar: {frames / secs:.1f} frames/s, {faces / secs:.1f} faces/s, peak RSS {rss:.1f} MB")


if __name__ == "__main__":
    main()
