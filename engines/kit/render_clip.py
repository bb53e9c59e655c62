#!/usr/bin/env python3
"""Renders a context-bias clip (H.264 MP4) and its ground-truth sidecar (CSV).

    python3 engines/kit/render_clip.py --out assets/context-bias-anti.mp4

One person at a time drifts across a scene that never goes with the expression shown (the
``anti`` setting), seven people per pass. The sidecar ``<out>.truth.csv`` holds, per frame,
``frame,label,x,y,w,h,scene`` (face box in pixels); ``clefd watch --truth`` reads it to
score each event. ``--world multi`` draws the multi-label world instead (one or two of six
states per person; ``label`` is ``a;b``). Needs gst-launch-1.0 with x264enc and mp4mux.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clef_kit import multi_world, world  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--people", type=int, default=14, help="people, one after another (7 expressions each pass)")
    p.add_argument("--frames-per-person", type=int, default=30)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--size", default="256x192")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--world", choices=["single", "multi"], default="single")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    n = a.people * a.frames_per_person
    gst = subprocess.Popen(
        ["gst-launch-1.0", "-q", "fdsrc", "fd=0", "!", "rawvideoparse", f"width={w}", f"height={h}", "format=rgb",
         f"framerate={a.fps}/1", "!", "videoconvert", "!", "video/x-raw,format=I420", "!", "x264enc",
         "speed-preset=slow", "bitrate=600", "key-int-max=30", "!", "mp4mux", "!", "filesink", f"location={a.out}"],
        stdin=subprocess.PIPE)
    with open(a.out + ".truth.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["frame", "label", "x", "y", "w", "h", "scene"])
        w_ = multi_world if a.world == "multi" else world
        for i, (img, box, label, scene) in enumerate(w_.clip_frames(n, a.seed, (w, h), a.frames_per_person)):
            gst.stdin.write(np.asarray(img, dtype=np.uint8).tobytes())
            name = ";".join(w_.LABELS[k] for k in label) if a.world == "multi" else w_.LABELS[label]
            out.writerow([i, name, *(f"{v:.1f}" for v in box), w_.SCENES[scene]])
    gst.stdin.close()
    if gst.wait() != 0:
        print("render_clip: gst-launch-1.0 failed (needs x264enc and mp4mux)", file=sys.stderr)
        return 1
    print(f"wrote {a.out} ({n} frames) and {a.out}.truth.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
