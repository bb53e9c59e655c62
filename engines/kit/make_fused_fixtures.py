"""Writes ``tests/fused/<fusion>-<task>/``: tiny seeded bundles, every fusion × task, each with
its two models and the fused graph, on which ``tests/fused.rs`` checks that the daemon's
host CLEF and the fused graph agree to 1e-5. The models are single linear layers on 8×8
crops with weights scaled up, so their logits span tens of units and reach φ's tails.

    .local/kit-venv/bin/python engines/kit/make_fused_fixtures.py
"""

from __future__ import annotations

import os
import shutil
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clef_kit import CLEF, InputSpec, export_bundle  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fused")
K = 6
FACE = InputSpec("face", "face", 8, 8, colour="GRAY", mean=[127.5], std=[127.5])
CONTEXT = InputSpec("context", "context_masked", 8, 8, mean=[127.5] * 3, std=[127.5] * 3)
DETECTOR = {"kind": "blazeface", "input": "input", "input_size": 192, "layout": "NCHW",
            "regressors": "reshaped_regressor_face_4", "scores": "reshaped_classifier_face_4",
            "anchors": {"strides": [4], "offset": 0.5, "aspect_ratios": [1.0],
                        "interpolated_scale_aspect_ratio": 0.0}}


class Linear(nn.Module):
    """Logits from the flattened inputs, large enough to reach the fusions' tails."""

    def __init__(self, features: int, gain: float):
        super().__init__()
        self.fc = nn.Linear(features, K)
        with torch.no_grad():
            self.fc.weight.mul_(gain)
            self.fc.bias.mul_(gain)

    def forward(self, *xs):
        return self.fc(torch.cat([x.flatten(1) for x in xs], 1))


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    for n, fusion in enumerate(("sum", "hm", "rubi")):
        for task in ("single_label", "multi_label"):
            torch.manual_seed(100 + n)
            model = CLEF(Linear(64 + 192, 8.0), Linear(192, 4.0), K, fusion=fusion, task=task)
            with torch.no_grad():
                model.y_e_star.copy_(torch.randn(K) * 3)
            out = os.path.join(OUT, f"{fusion}-{task.replace('_label', '')}")
            export_bundle(out, model.eval(), name=f"fused-{fusion}-{task}", version="0",
                          description="test fixture: tiny linear models (engines/kit/make_fused_fixtures.py)",
                          labels=[f"label{i}" for i in range(K)], vanilla_inputs=[FACE, CONTEXT],
                          context_inputs=[CONTEXT], detector=DETECTOR,
                          detector_file=os.path.join(ROOT, "engines", "face-fer2013", "blazeface_full.onnx"),
                          thresholds=[0.3, 0.4, 0.5, 0.5, 0.6, 0.7] if task == "multi_label" else None,
                          link_detector=True, fused=True)
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
