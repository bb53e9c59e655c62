"""The CLEF wrapper and loss: shapes, agreement with the shared reference vectors (which
the Rust side checks too), hand-computed loss terms, gradients, and export round trips."""

import json
import math
import os
import sys
import tempfile
import tomllib
import unittest

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from clef_kit import CLEF, InputSpec, SubjectSpec, clef_loss, export_bundle, fuse  # noqa: E402
from clef_kit.demo_model import CaerNetLite, ContextOnly  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VECTORS = os.path.join(ROOT, "tests", "clef_reference", "vectors.json")


class Linear(nn.Module):
    """A stand-in CAER model: any module returning [batch, K] works."""

    def __init__(self, k, inputs=1):
        super().__init__()
        self.fc = nn.Linear(4 * inputs, k)

    def forward(self, *xs):
        return self.fc(torch.cat([x.flatten(1) for x in xs], 1))


class ClefTests(unittest.TestCase):
    def test_outputs_have_batch_by_labels_shape(self):
        torch.manual_seed(0)
        m = CLEF(Linear(7, 2), Linear(7), 7)
        out = m((torch.randn(5, 4), torch.randn(5, 4)), (torch.randn(5, 4),))
        for name in ("y_e", "y_c", "factual", "counterfactual", "tie"):
            self.assertEqual(tuple(getattr(out, name).shape), (5, 7), name)
        self.assertTrue(torch.allclose(out.tie, out.factual - out.counterfactual))

    def test_y_e_star_starts_uniform(self):
        m = CLEF(Linear(7), Linear(7), 7)
        self.assertEqual(m.y_e_star.shape, (7,))
        self.assertEqual(len(set(m.y_e_star.tolist())), 1)

    def test_agrees_with_the_shared_reference_vectors_to_1e_5(self):
        with open(VECTORS) as f:
            cases = json.load(f)["cases"]
        self.assertGreaterEqual(len(cases), 45)
        for i, c in enumerate(cases):
            for dtype in (torch.float32, torch.float64):
                m = CLEF(nn.Identity(), nn.Identity(), len(c["y_c"]), fusion=c["fusion"])
                with torch.no_grad():
                    m.y_e_star.copy_(torch.tensor(np.broadcast_to(c["y_e_star"], len(c["y_c"])).copy()))
                m = m.to(dtype)
                out = m.effects(torch.tensor([c["y_e"]], dtype=dtype), torch.tensor([c["y_c"]], dtype=dtype))
                for key, got in (("factual", out.factual), ("counterfactual", out.counterfactual),
                                 ("tie", out.tie), ("softmax_tie", torch.softmax(out.tie, -1)),
                                 ("sigmoid_tie", torch.sigmoid(out.tie))):
                    want = torch.tensor(c[key], dtype=torch.float64)
                    err = (got[0].double() - want).abs()
                    tol = 1e-5 * torch.clamp(want.abs(), min=1.0)
                    self.assertTrue(bool((err <= tol).all()), f"case {i} {c['fusion']} {key} {dtype}: {err.max()}")

    def test_fusion_is_finite_for_huge_logits(self):
        x = torch.tensor([-1e4, -150.0, 0.0, 150.0, 1e4])
        for f in ("sum", "hm", "rubi"):
            self.assertTrue(bool(torch.isfinite(fuse(x, x.flip(0), f)).all()), f)

    def test_single_label_loss_terms_match_hand_computation(self):
        m = CLEF(nn.Identity(), nn.Identity(), 2)
        with torch.no_grad():
            m.y_e_star.copy_(torch.tensor([0.5, -0.5]))
        y_e, y_c = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 2.0]])
        out = m.effects(y_e, y_c)
        loss = clef_loss(m, out, torch.tensor([0]), kl_weight=0.5)

        def ls(x):
            return -math.log1p(math.exp(-x))

        f = [ls(0.0 + 1.0), ls(2.0 - 1.0)]
        cf = [ls(0.0 + 0.5), ls(2.0 - 0.5)]

        def ce(z, y):
            return -(z[y] - math.log(sum(math.exp(v) for v in z)))

        p = [math.exp(v) / sum(math.exp(u) for u in f) for v in f]
        log_q = [v - math.log(sum(math.exp(u) for u in cf)) for v in cf]
        kl = -sum(pi * qi for pi, qi in zip(p, log_q))
        self.assertAlmostEqual(float(loss.factual), ce(f, 0), places=6)
        self.assertAlmostEqual(float(loss.counterfactual), ce(cf, 0), places=6)
        self.assertAlmostEqual(float(loss.kl), kl, places=6)
        self.assertAlmostEqual(float(loss.total), ce(f, 0) + ce(cf, 0) + 0.5 * kl, places=6)

    def test_multi_label_loss_uses_binary_cross_entropy(self):
        m = CLEF(nn.Identity(), nn.Identity(), 2, task="multi_label")
        y_e, y_c = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 2.0]])
        out = m.effects(y_e, y_c)
        loss = clef_loss(m, out, torch.tensor([[1, 0]]))

        def ls(x):
            return -math.log1p(math.exp(-x))

        def bce(z, y):
            s = 1 / (1 + math.exp(-z))
            return -(y * math.log(s) + (1 - y) * math.log(1 - s))

        f = [ls(1.0), ls(1.0)]
        cf = [ls(0.0), ls(2.0)]
        p = [1 / (1 + math.exp(-v)) for v in f]
        self.assertAlmostEqual(float(loss.factual), (bce(f[0], 1) + bce(f[1], 0)) / 2, places=6)
        self.assertAlmostEqual(float(loss.counterfactual), (bce(cf[0], 1) + bce(cf[1], 0)) / 2, places=6)
        self.assertAlmostEqual(float(loss.kl), (bce(cf[0], p[0]) + bce(cf[1], p[1])) / 2, places=6)

    def test_y_e_star_receives_gradient_and_kl_leaves_the_branches_alone(self):
        torch.manual_seed(1)
        m = CLEF(Linear(3), Linear(3), 3)
        out = m((torch.randn(4, 4),), (torch.randn(4, 4),))
        loss = clef_loss(m, out, torch.tensor([0, 1, 2, 0]))
        loss.total.backward()
        self.assertIsNotNone(m.y_e_star.grad)
        self.assertGreater(float(m.y_e_star.grad.abs().sum()), 0.0)
        m.zero_grad()
        out = m((torch.randn(4, 4),), (torch.randn(4, 4),))
        clef_loss(m, out, torch.tensor([0, 1, 2, 0])).kl.backward()
        self.assertGreater(float(m.y_e_star.grad.abs().sum()), 0.0)
        for p in list(m.vanilla.parameters()) + list(m.context_branch.parameters()):
            self.assertTrue(p.grad is None or float(p.grad.abs().sum()) == 0.0)

    def test_rejects_unknown_fusion_and_task(self):
        with self.assertRaises(ValueError):
            CLEF(Linear(3), Linear(3), 3, fusion="max")
        with self.assertRaises(ValueError):
            CLEF(Linear(3), Linear(3), 3, task="regression")


class ExportTests(unittest.TestCase):
    def test_export_round_trip_through_onnxruntime_within_1e_5(self):
        import onnxruntime as ort

        torch.manual_seed(2)
        face = InputSpec("face", "face", 48, 48, colour="GRAY", mean=[127.5], std=[127.5])
        ctx = InputSpec("context", "context_masked", 64, 48, mean=[127.5] * 3, std=[127.5] * 3)
        model = CLEF(CaerNetLite(7), ContextOnly(7), 7)
        with torch.no_grad():
            model.y_e_star.copy_(torch.linspace(-1, 1, 7))
        # A few training steps so BatchNorm statistics are not the defaults.
        model.train()
        for _ in range(2):
            model((torch.randn(8, 1, 48, 48), torch.randn(8, 3, 48, 64)), (torch.randn(8, 3, 48, 64),))
        model.eval()
        detector = {"kind": "blazeface", "input": "input", "input_size": 192, "regressors": "r", "scores": "s",
                    "anchors": {"strides": [4]}}
        with tempfile.TemporaryDirectory() as d:
            det = os.path.join(d, "det.onnx")
            with open(det, "wb") as f:
                f.write(b"x")
            out_dir = os.path.join(d, "bundle")
            export_bundle(out_dir, model, name="t", version="0", labels=list("abcdefg"), vanilla_inputs=[face, ctx],
                          context_inputs=[ctx], detector=detector, detector_file=det,
                          subject=SubjectSpec(face_scale=1.2, mask_scale=1.5))
            with open(os.path.join(out_dir, "manifest.toml"), "rb") as f:
                man = tomllib.load(f)
            self.assertEqual(man["labels"], list("abcdefg"))
            self.assertEqual(man["fusion"], "sum")
            self.assertEqual(len(man["counterfactual_e"]), 7)
            self.assertAlmostEqual(man["counterfactual_e"][6], 1.0, places=6)
            self.assertEqual([i["role"] for i in man["vanilla"]["inputs"]], ["face", "context_masked"])
            self.assertEqual(man["subject"]["mask_scale"], 1.5)
            for batch in (1, 5):  # the batch dimension is dynamic
                f_in = torch.randn(batch, 1, 48, 48)
                c_in = torch.randn(batch, 3, 48, 64)
                with torch.no_grad():
                    want_e = model.vanilla(f_in, c_in).numpy()
                    want_c = model.context_branch(c_in).numpy()
                van = ort.InferenceSession(os.path.join(out_dir, "vanilla.onnx"), providers=["CPUExecutionProvider"])
                got_e = van.run(["logits"], {"face": f_in.numpy(), "context": c_in.numpy()})[0]
                cb = ort.InferenceSession(os.path.join(out_dir, "context_branch.onnx"),
                                          providers=["CPUExecutionProvider"])
                got_c = cb.run(["logits"], {"context": c_in.numpy()})[0]
                np.testing.assert_allclose(got_e, want_e, atol=1e-5, rtol=0)
                np.testing.assert_allclose(got_c, want_c, atol=1e-5, rtol=0)


if __name__ == "__main__":
    unittest.main()
