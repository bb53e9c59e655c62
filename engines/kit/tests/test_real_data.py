"""CAER-S and EMOTIC through the kit and the daemon, on fixtures in the layouts they ship in:
read, train one short epoch, export, and ``clefd explain`` / ``clefd eval`` load the result.
Bad layouts are refused naming the file. Needs ``target/release/clefd`` (``make test``
builds it first)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import torch

from clef_kit import datasets, fixtures, models, train
from clef_kit.datasets import DatasetError
from clef_kit.faces import clefd_binary


def clefd(*args) -> subprocess.CompletedProcess:
    exe = clefd_binary()
    if not os.path.exists(exe):
        raise AssertionError(f"{exe} is missing: build clefd first (make build)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def run_train(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(["--epochs", "1", "--batch", "8", "--workers", "0", "--log-every", "1", *argv])
    return code, out.getvalue(), err.getvalue()


class RealDataTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="clef-kit-real-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts) -> str:
        return os.path.join(self.tmp, *parts)

    def test_caer_s_trains_resumes_exports_and_the_daemon_loads_it(self):
        data, out = self.path("CAER-S"), self.path("bundle")
        fixtures.write_caer_s(data, per_class=2, test_per_class=1)
        code, log, err = run_train("--dataset", f"caer-s:{data}", "--out", out)
        self.assertEqual(code, 0, err)
        self.assertIn("start from scratch", log)
        self.assertIn("faces found: train", log)
        self.assertTrue(os.path.exists(self.path("bundle.checkpoints", "last.pt")))
        summary = json.loads(read_text(os.path.join(out, "training.json")))
        self.assertEqual(summary["epochs"], 1)
        code, log, err = run_train("--dataset", f"caer-s:{data}", "--out", out, "--epochs", "2", "--resume")
        self.assertEqual(code, 0, err)
        self.assertIn("resumed from", log)
        self.assertIn("epoch 2/2", log)
        self.assertNotIn("epoch 1/2:", log)
        picture = os.path.join(data, "test", "Happy", sorted(os.listdir(os.path.join(data, "test", "Happy")))[0])
        explained = clefd("explain", "--bundle", out, "--image", picture)
        self.assertEqual(explained.returncode, 0, explained.stderr)
        self.assertIn("faces", json.loads(explained.stdout))
        scored = clefd("eval", "--bundle", out, "--dataset", f"caer-s:{data}", "--json")
        self.assertEqual(scored.returncode, 0, scored.stderr)
        r = json.loads(scored.stdout)
        self.assertEqual(r["n"] + r["no_face"], 7, "every test picture is scored or counted as faceless")
        self.assertEqual(r["n"], summary["test"], "the kit and clefd find faces in the same pictures")

    def test_emotic_reads_alike_in_every_layout_and_the_daemon_scores_it(self):
        for layout in ("mat", "csv"):
            fixtures.write_emotic(self.path(layout), layout=layout, people=12)
        shutil.copytree(self.path("csv"), self.path("npy"))
        shutil.rmtree(self.path("npy", "emotic"))  # no pictures: the .npy arrays stand in
        reads = {k: datasets.read(f"emotic:{self.path(k)}", "test")[0] for k in ("mat", "csv", "npy")}
        self.assertEqual([r.labels for r in reads["mat"]], [r.labels for r in reads["csv"]])
        self.assertEqual([r.labels for r in reads["mat"]], [r.labels for r in reads["npy"]])
        for a, b in zip(reads["mat"], reads["csv"]):
            for u, v in zip(a.face, b.face):
                self.assertAlmostEqual(u, v, places=3)
        self.assertTrue(all(r.array is not None and r.array.shape == (224, 224, 3) for r in reads["npy"]))
        out = self.path("bundle")
        code, log, err = run_train("--dataset", f"emotic:{self.path('mat')}", "--out", out)
        self.assertEqual(code, 0, err)
        self.assertIn("test debiased: mAP", log)
        manifest = read_text(os.path.join(out, "manifest.toml"))
        self.assertIn('task = "multi_label"', manifest)
        self.assertIn("[fused]", manifest)
        picture = reads["csv"][0].path
        explained = clefd("explain", "--bundle", out, "--image", picture)
        self.assertEqual(explained.returncode, 0, explained.stderr)
        results = {}
        for layout in ("mat", "csv", "npy"):
            scored = clefd("eval", "--bundle", out, "--dataset", f"emotic:{self.path(layout)}", "--json")
            self.assertEqual(scored.returncode, 0, scored.stderr)
            r = json.loads(scored.stdout)
            self.assertEqual(r["n"], len(reads["mat"]))
            self.assertEqual(len(r["debiased"]["ap"]), 26)
            results[layout] = r["debiased"]["map"]
        self.assertAlmostEqual(results["mat"], results["csv"], places=6)
        text = clefd("eval", "--bundle", out, "--dataset", f"emotic:{self.path('mat')}")
        self.assertIn("average precision per label", text.stdout)
        self.assertIn("Yearning", text.stdout)

    def test_bad_layouts_are_refused_naming_the_file(self):
        data = self.path("CAER-S")
        fixtures.write_caer_s(data, per_class=1, test_per_class=1)
        os.rename(os.path.join(data, "train", "Happy"), os.path.join(data, "train", "Joyful"))
        code, _, err = run_train("--dataset", f"caer-s:{data}", "--out", self.path("b"))
        self.assertEqual(code, 2)
        self.assertIn(os.path.join(data, "train", "Joyful"), err)
        self.assertIn("not a CAER-S class", err)
        with self.assertRaisesRegex(DatasetError, "no such folder"):
            datasets.read_caer_s(self.path("nothing"), "train")

        emotic = self.path("emotic")
        fixtures.write_emotic(emotic, layout="csv", people=3)
        test_csv = os.path.join(emotic, "emotic_pre", "test.csv")
        header = read_text(test_csv).splitlines()[0]
        write_text(test_csv, header + "\n" + "0,fixture/images,test_0000.jpg,\"[224, 168]\",\"[0, 4, 96, 168]\",\"['Glee']\",\"[5, 5, 5]\",Male,Adult\n")
        with self.assertRaisesRegex(DatasetError, "test.csv: row 2: 'Glee' is not one of EMOTIC's 26"):
            datasets.read(f"emotic:{emotic}", "test")
        bundle = os.path.join(os.path.dirname(__file__), "..", "..", "context-multilabel-demo")
        scored = clefd("eval", "--bundle", bundle, "--dataset", f"emotic:{emotic}")
        self.assertNotEqual(scored.returncode, 0)
        self.assertIn("test.csv", scored.stderr)
        self.assertIn("'Glee'", scored.stderr)
        write_text(test_csv, "Index,Folder,Filename\n0,a,b.jpg\n")
        with self.assertRaisesRegex(DatasetError, "test.csv: missing column"):
            datasets.read(f"emotic:{emotic}", "test")
        with self.assertRaisesRegex(DatasetError, "not an EMOTIC folder"):
            datasets.read(f"emotic:{self.path('nothing')}", "test")
        with self.assertRaisesRegex(DatasetError, "use caer-s:DIR or emotic:DIR"):
            datasets.parse_spec("affectnet:/data")

    def test_local_weights_seed_the_model_and_foreign_ones_are_refused(self):
        good, bad = self.path("good.pt"), self.path("bad.pt")
        torch.save(models.caer_net(7).state_dict(), good)
        torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
        logged = []
        train.load_weights(models.caer_net(7), good, logged.append)
        self.assertRegex(logged[0], r"weights: (\d+) of \1 tensors")
        with self.assertRaisesRegex(DatasetError, "none of its 1 tensors fits"):
            train.load_weights(models.caer_net(7), bad, logged.append)


if __name__ == "__main__":
    unittest.main()
