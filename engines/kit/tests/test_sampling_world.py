"""The daemon's preprocessing as the kit reproduces it, and the context-bias world's splits."""

import os
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from clef_kit import world  # noqa: E402
from clef_kit.dataset import read_split, write_split  # noqa: E402
from clef_kit.sampling import InputSpec, SubjectSpec, build_input, sample, subject_boxes  # noqa: E402


def gradient(w, h):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 10)[None, :]
    img[..., 1] = (np.arange(h) * 10)[:, None]
    img[..., 2] = 200
    return img


class SamplingTests(unittest.TestCase):
    # The same cases as the unit tests of src/engine/preprocess.rs.
    def test_identity_resize_copies_pixels(self):
        img = gradient(4, 3)
        spec = InputSpec("x", "scene", 4, 3, layout="NHWC", mean=[0.0], std=[1.0])
        out = sample(img, (0, 0, 4, 3), None, spec)
        np.testing.assert_array_equal(out, img.astype(np.float32))

    def test_outside_and_masked_pixels_are_black_after_normalisation(self):
        img = gradient(4, 4)
        spec = InputSpec("x", "scene", 8, 4, colour="GRAY", mean=[127.5], std=[127.5])
        out = sample(img, (0, 0, 8, 4), (0, 0, 1, 1), spec).ravel()
        self.assertEqual(out[0], -1.0)
        self.assertEqual(out[7], -1.0)
        self.assertGreater(out[1], -1.0)

    def test_bgr_swaps_channels_in_nchw(self):
        img = np.array([[[10, 20, 30]]], np.uint8)
        out = sample(img, (0, 0, 1, 1), None, InputSpec("x", "scene", 1, 1, colour="BGR", mean=[0.0], std=[1.0]))
        self.assertEqual(out.ravel().tolist(), [30.0, 20.0, 10.0])

    def test_context_masked_blanks_the_scaled_face_box(self):
        img = np.full((40, 40, 3), 255, np.uint8)
        spec = InputSpec("c", "context_masked", 40, 40, mean=[0.0], std=[255.0])
        out = build_input(img, (15, 15, 10, 10), spec, SubjectSpec(mask_scale=2.0))
        self.assertEqual(out.shape, (3, 40, 40))
        self.assertEqual(float(out[:, 20, 20].max()), 0.0)  # centre of the face
        self.assertEqual(float(out[:, 11, 11].max()), 0.0)  # inside the doubled box
        self.assertEqual(float(out[:, 5, 5].min()), 1.0)  # outside it

    def test_subject_boxes_follow_the_manifest(self):
        b = subject_boxes((10, 20, 10, 10), SubjectSpec(face_scale=1.2, mask="body"))
        np.testing.assert_allclose(b["face"], (9, 19, 12, 12), atol=1e-5)
        np.testing.assert_allclose(b["body"], (0, 15, 30, 70), atol=1e-5)
        self.assertEqual(b["mask"], b["body"])


class MeanApTests(unittest.TestCase):
    # The same ranking as the unit test of src/eval.rs: the two must score alike.
    def test_average_precision_matches_a_hand_computed_ranking(self):
        from clef_kit.evaluate import average_precision, summarise_multi

        scores = np.array([0.5, 0.2, 0.9])
        self.assertAlmostEqual(average_precision(scores, np.array([False, True, True])), (1 + 2 / 3) / 2)
        self.assertIsNone(average_precision(scores, np.array([False, False, False])))
        y = np.array([[3.0, -3.0], [-3.0, 3.0]])
        r = summarise_multi(y, np.zeros_like(y), np.zeros(2), "sum", [(0,), (1,)])
        self.assertAlmostEqual(r["vanilla"]["map"], 100.0)
        self.assertAlmostEqual(r["debiased"]["map"], 100.0)


class WorldTests(unittest.TestCase):
    def scenes(self, split, n=350):
        return [(s.label, s.scene) for s in world.sample_split(split, n, seed=5, size=(96, 72))]

    def test_splits_tie_scene_to_expression_as_named(self):
        biased = np.mean([l == s for l, s in self.scenes("biased")])
        balanced = np.mean([l == s for l, s in self.scenes("balanced")])
        anti = np.mean([l == s for l, s in self.scenes("anti")])
        self.assertGreater(biased, 0.84)
        self.assertLess(biased, 0.96)
        self.assertLess(abs(balanced - 1 / 7), 0.07)
        self.assertEqual(anti, 0.0)

    def test_expressions_are_balanced_and_rendering_is_deterministic(self):
        labels = [l for l, _ in self.scenes("anti", 70)]
        self.assertEqual(np.bincount(labels).tolist(), [10] * 7)
        a = next(world.sample_split("biased", 1, seed=9))
        b = next(world.sample_split("biased", 1, seed=9))
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
        self.assertEqual(a.box, b.box)

    def test_face_boxes_lie_inside_the_picture(self):
        for s in world.sample_split("balanced", 70, seed=3):
            x, y, w, h = s.box
            self.assertTrue(0 <= x and 0 <= y and x + w <= 192 and y + h <= 144, s.box)

    def test_dataset_folder_round_trip(self):
        with tempfile.TemporaryDirectory() as d:
            write_split(d, "anti", 14, seed=1)
            items = read_split(d)
            self.assertEqual(len(items), 14)
            self.assertEqual(items[3].label, 3)
            self.assertNotEqual(items[3].scene, 3)
            self.assertEqual(items[0].image.shape, (144, 192, 3))


if __name__ == "__main__":
    unittest.main()
