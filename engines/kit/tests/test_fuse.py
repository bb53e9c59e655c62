"""The fused CLEF graph (clef_kit.fuse): its outputs agree with the shared reference vectors
and with the CLEF wrapper to 1e-5 for every fusion and task, shared inputs are fed once, and a
bundle without a context branch is refused with a message naming its manifest."""

import json
import os
import sys
import tempfile
import tomllib
import unittest

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from clef_kit import CLEF, InputSpec, export_bundle, export_vanilla_bundle  # noqa: E402
from clef_kit.demo_model import CaerNetLite, ContextOnly  # noqa: E402
from clef_kit.fuse import OUTPUTS, fuse_bundle, fused_model  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VECTORS = os.path.join(ROOT, "tests", "clef_reference", "vectors.json")
DETECTOR_FILE = os.path.join(ROOT, "engines", "face-fer2013", "blazeface_full.onnx")
DETECTOR = {"kind": "blazeface", "input": "input", "input_size": 192, "layout": "NCHW",
            "regressors": "reshaped_regressor_face_4", "scores": "reshaped_classifier_face_4",
            "anchors": {"strides": [4], "offset": 0.5, "aspect_ratios": [1.0],
                        "interpolated_scale_aspect_ratio": 0.0}}


def identity(name: str, k: int) -> onnx.ModelProto:
    """A 'model' whose logits are its input: the fusion alone is then what is tested."""
    value = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", k])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])
    graph = helper.make_graph([helper.make_node("Identity", [name], ["logits"])], "identity", [value], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def run(model: onnx.ModelProto, feeds: dict) -> dict:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


class FusedGraphTests(unittest.TestCase):
    def test_agrees_with_the_shared_reference_vectors_to_1e_5(self):
        with open(VECTORS) as f:
            cases = json.load(f)["cases"]
        for i, c in enumerate(cases):
            k = len(c["y_c"])
            spec = lambda name: {"name": name, "role": "face", "width": 8, "height": 8}  # noqa: E731
            model, inputs = fused_model(identity("y_e_in", k), identity("y_c_in", k),
                                        vanilla_inputs=[spec("y_e_in")], context_inputs=[spec("y_c_in")],
                                        vanilla_output="logits", context_output="logits", fusion=c["fusion"],
                                        y_e_star=list(np.broadcast_to(c["y_e_star"], k)))
            self.assertEqual([s["name"] for s in inputs], ["y_e_in", "y_c_in"])
            got = run(model, {"y_e_in": np.array([c["y_e"]], np.float32), "y_c_in": np.array([c["y_c"]], np.float32)})
            self.assertEqual(set(got), set(OUTPUTS))
            for key in ("factual", "counterfactual", "tie"):
                want = np.array(c[key], np.float64)
                err = np.abs(got[key][0].astype(np.float64) - want)
                tol = 1e-5 * np.maximum(np.abs(want), 1.0)
                self.assertTrue((err <= tol).all(), f"case {i} {c['fusion']} {key}: {err.max()}")
                self.assertTrue(np.isfinite(got[key]).all())

    def test_exported_bundles_match_the_wrapper_for_every_fusion_and_task(self):
        face = InputSpec("face", "face", 48, 48, colour="GRAY", mean=[127.5], std=[127.5])
        context = InputSpec("context", "context_masked", 64, 48, mean=[127.5] * 3, std=[127.5] * 3)
        for fusion in ("sum", "hm", "rubi"):
            for task in ("single_label", "multi_label"):
                torch.manual_seed(3)
                model = CLEF(CaerNetLite(7), ContextOnly(7), 7, fusion=fusion, task=task).eval()
                with torch.no_grad():
                    model.y_e_star.copy_(torch.randn(7))
                with tempfile.TemporaryDirectory() as d:
                    export_bundle(d, model, name="t", version="0", labels=[f"l{i}" for i in range(7)],
                                  vanilla_inputs=[face, context], context_inputs=[context], detector=DETECTOR,
                                  detector_file=DETECTOR_FILE, thresholds=[0.5] * 7 if task == "multi_label" else None,
                                  fused=True)
                    with open(os.path.join(d, "manifest.toml"), "rb") as f:
                        manifest = tomllib.load(f)
                    self.assertEqual(manifest["fused"]["file"], "clef_fused.onnx")
                    self.assertEqual([s["name"] for s in manifest["fused"]["inputs"]], ["face", "context"],
                                     "the context both models read is fed once")
                    session = ort.InferenceSession(os.path.join(d, "clef_fused.onnx"))
                    x = {"face": torch.randn(3, 1, 48, 48), "context": torch.randn(3, 3, 48, 64)}
                    got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {n: v.numpy() for n, v in x.items()})))
                with torch.no_grad():
                    want = model((x["face"], x["context"]), (x["context"],))
                for key in OUTPUTS:
                    err = np.abs(got[key] - getattr(want, key).numpy()).max()
                    self.assertLess(err, 1e-5, f"{fusion} {task} {key}")

    def test_inputs_of_the_same_name_but_another_spec_are_kept_apart(self):
        k = 3
        a = {"name": "x", "role": "face", "width": 8, "height": 8}
        b = {"name": "x", "role": "context_masked", "width": 8, "height": 8}
        model, inputs = fused_model(identity("x", k), identity("x", k), vanilla_inputs=[a], context_inputs=[b],
                                    vanilla_output="logits", context_output="logits", fusion="sum",
                                    y_e_star=[0.0] * k)
        self.assertEqual([s["name"] for s in inputs], ["x", "context_branch/x"])
        self.assertEqual(inputs[1]["role"], "context_masked")
        got = run(model, {"x": np.full((1, k), 2.0, np.float32), "context_branch/x": np.zeros((1, k), np.float32)})
        np.testing.assert_allclose(got["y_e"], 2.0)
        np.testing.assert_allclose(got["y_c"], 0.0)

    def test_a_bundle_without_a_context_branch_is_refused_by_name(self):
        face = InputSpec("face", "face", 48, 48, colour="GRAY", mean=[127.5], std=[127.5])
        with tempfile.TemporaryDirectory() as d:
            export_vanilla_bundle(d, FaceOnly(), name="b", version="0", labels=[f"l{i}" for i in range(7)], inputs=[face],
                                  detector=DETECTOR, detector_file=DETECTOR_FILE)
            with self.assertRaises(ValueError) as e:
                fuse_bundle(d)
            self.assertIn(os.path.join(d, "manifest.toml"), str(e.exception))
            self.assertIn("no [context_branch]", str(e.exception))
            self.assertFalse(os.path.exists(os.path.join(d, "clef_fused.onnx")))


class FaceOnly(torch.nn.Module):
    """A model without a context branch (as the fair baseline is)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(48 * 48, 7)

    def forward(self, face):
        return self.fc(face.flatten(1))


if __name__ == "__main__":
    unittest.main()
