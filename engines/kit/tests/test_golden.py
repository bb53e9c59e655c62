"""Golden vectors (clef_kit.golden): an exported bundle carries them; their tensors are the
daemon's preprocessing of their pictures; their numbers agree with the PyTorch model itself and
a φ written here (1e-4), and with the fused graph (1e-5); decisions have a clear margin; an older bundle gets
them from the command line; and the onnx_tools copies (FP16, perturbed) really move the numbers."""

import json
import os
import sys
import tempfile
import unittest

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from clef_kit import CLEF, InputSpec, SubjectSpec, export_bundle, export_vanilla_bundle  # noqa: E402
from clef_kit.demo_model import CaerNetLite, ContextOnly  # noqa: E402
from clef_kit.golden import main as golden_main  # noqa: E402
from clef_kit.onnx_tools import fp16_copy, perturb_bias  # noqa: E402
from clef_kit.sampling import build_input  # noqa: E402

from test_fuse import DETECTOR, DETECTOR_FILE, FaceOnly  # noqa: E402

FACE = InputSpec("face", "face", 48, 48, colour="GRAY", mean=[127.5], std=[127.5])
CONTEXT = InputSpec("context", "context_masked", 64, 48, mean=[127.5] * 3, std=[127.5] * 3)


def load(d: str):
    with open(os.path.join(d, "golden.json")) as f:
        return json.load(f)


def run(path: str, feeds: dict, names=None):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return session.run(names, {k: v for k, v in feeds.items() if k in wanted})


class GoldenTests(unittest.TestCase):
    def test_an_exported_bundle_carries_vectors_the_cpu_reproduces(self):
        for task in ("single_label", "multi_label"):
            torch.manual_seed(5)
            model = CLEF(CaerNetLite(7), ContextOnly(7), 7, fusion="sum", task=task).eval()
            with torch.no_grad():
                model.y_e_star.copy_(torch.randn(7))
            with tempfile.TemporaryDirectory() as d:
                export_bundle(d, model, name="t", version="0", labels=[f"l{i}" for i in range(7)],
                              vanilla_inputs=[FACE, CONTEXT], context_inputs=[CONTEXT], detector=DETECTOR,
                              detector_file=DETECTOR_FILE, subject=SubjectSpec(face_scale=1.25, mask_scale=1.8),
                              thresholds=[0.5] * 7 if task == "multi_label" else None, fused=True)
                g = load(d)
                size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith("golden"))
                self.assertLess(size, 400_000, "a small set")
                self.assertEqual(set(g["models"]), {"vanilla", "context_branch", "fused"})
                self.assertEqual(g["inputs"]["fused"]["context"], g["inputs"]["context_branch"]["context"],
                                 "one file for the same input")
                pictures = np.load(os.path.join(d, g["pictures"]))
                n = len(g["vectors"])
                self.assertEqual(pictures.shape[0], n)
                feeds = {name: np.load(os.path.join(d, f)) for name, f in g["inputs"]["fused"].items()}
                subject = SubjectSpec(face_scale=1.25, mask_scale=1.8)
                for i, v in enumerate(g["vectors"]):
                    for spec in (FACE, CONTEXT):
                        np.testing.assert_array_equal(feeds[spec.name][i],
                                                      build_input(pictures[i], tuple(v["face"]), spec, subject))
                # Independent of the reference's own path (ONNX Runtime, clef_kit.golden's φ): the
                # PyTorch model itself, φ = log σ(a + b) written here, and the fused graph.
                with torch.no_grad():
                    t_face, t_ctx = torch.from_numpy(feeds["face"]), torch.from_numpy(feeds["context"])
                    y_e = model.vanilla(t_face, t_ctx).numpy().astype(np.float64)
                    y_c = model.context_branch(t_ctx).numpy().astype(np.float64)
                    star = model.y_e_star.numpy().astype(np.float64)

                def phi(a, b):
                    return -np.logaddexp(0.0, -(a + b))  # log σ(a + b), stably

                fused = dict(zip(("y_e", "y_c", "factual", "counterfactual", "tie"),
                                 run(os.path.join(d, "clef_fused.onnx"), feeds)))
                for i, v in enumerate(g["vectors"]):
                    factual, counterfactual = phi(y_c[i], y_e[i]), phi(y_c[i], star)
                    tie = factual - counterfactual
                    for ref, mine in (("y_e", y_e[i]), ("y_c", y_c[i]), ("factual", factual),
                                      ("counterfactual", counterfactual), ("debiased", tie)):
                        self.assertLess(np.abs(np.float64(v[ref]) - mine).max(), 1e-4, f"{task} {ref}: PyTorch")
                    for key, ref in (("y_e", "y_e"), ("y_c", "y_c"), ("factual", "factual"),
                                     ("counterfactual", "counterfactual"), ("tie", "debiased")):
                        self.assertLess(np.abs(fused[key][i] - np.float32(v[ref])).max(), 1e-5, f"{task} {key}")
                    if task == "single_label":
                        self.assertEqual(v["top"], int(np.argmax(tie)))
                        self.assertGreater(v["margin"], 0.0)
                    else:
                        self.assertEqual(v["active"], [int(j) for j in np.nonzero(tie >= 0.0)[0]])

    def test_an_older_bundle_gets_them_from_the_command_line(self):
        torch.manual_seed(3)
        model = FaceOnly().eval()
        with tempfile.TemporaryDirectory() as d:
            export_vanilla_bundle(d, model, name="b", version="0", labels=[f"l{i}" for i in range(7)],
                                  inputs=[FACE], detector=DETECTOR, detector_file=DETECTOR_FILE)
            for f in os.listdir(d):
                if f.startswith("golden"):
                    os.remove(os.path.join(d, f))
            self.assertEqual(golden_main([d, "--vectors", "2"]), 0)
            g = load(d)
            self.assertEqual(len(g["vectors"]), 2)
            self.assertIsNone(g["vectors"][0]["debiased"], "no context branch: no TIE")
            self.assertEqual(g["vectors"][0]["top"], int(np.argmax(g["vectors"][0]["y_e"])))
            # The reference is the model's own output: PyTorch on the stored tensors agrees.
            face = np.load(os.path.join(d, g["inputs"]["vanilla"]["face"]))
            with torch.no_grad():
                mine = model(torch.from_numpy(face)).numpy()
            np.testing.assert_allclose(np.float32([v["y_e"] for v in g["vectors"]]), mine, atol=1e-5)
            self.assertEqual(golden_main([os.path.join(d, "missing")]), 1)

    def test_the_broken_copies_move_the_numbers(self):
        with tempfile.TemporaryDirectory() as d:
            export_vanilla_bundle(d, FaceOnly(), name="b", version="0", labels=[f"l{i}" for i in range(7)],
                                  inputs=[FACE], detector=DETECTOR, detector_file=DETECTOR_FILE)
            g = load(d)
            feeds = {"face": np.load(os.path.join(d, g["inputs"]["vanilla"]["face"]))}
            ref = np.float32([v["y_e"] for v in g["vectors"]])
            fp16_copy(os.path.join(d, "vanilla.onnx"), os.path.join(d, "half.onnx"))
            half = run(os.path.join(d, "half.onnx"), feeds)[0]
            dev = np.abs(half - ref).max()
            self.assertTrue(0 < dev < 0.1, f"FP16 rounding moves the logits a little: {dev}")
            name = perturb_bias(os.path.join(d, "vanilla.onnx"), os.path.join(d, "bent.onnx"), 0.25)
            bent = run(os.path.join(d, "bent.onnx"), feeds)[0]
            np.testing.assert_allclose(bent - ref, 0.25, atol=1e-5, err_msg=name)


if __name__ == "__main__":
    unittest.main()
