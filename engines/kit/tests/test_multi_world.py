"""The multi-label context-bias world: one or two states per person, never an exclusive
pair, and scenes tied to the states as each split says."""

from __future__ import annotations

import unittest

import numpy as np

from clef_kit import multi_world as mw


class MultiWorldTest(unittest.TestCase):
    def test_people_show_one_or_two_compatible_states(self):
        rng = np.random.default_rng(0)
        states = [mw.states_for(i, rng) for i in range(600)]
        self.assertTrue(all(1 <= len(s) <= 2 for s in states))
        self.assertTrue(all(s[0] == i % 6 or i % 6 in s for i, s in enumerate(states)))
        pairs = [frozenset(mw.LABELS[k] for k in s) for s in states if len(s) == 2]
        self.assertFalse(any(p in mw.EXCLUSIVE for p in pairs))
        self.assertAlmostEqual(len(pairs) / len(states), mw.TWO_STATES, delta=0.06)

    def test_splits_tie_the_scene_to_the_states_as_they_say(self):
        rng = np.random.default_rng(1)
        people = [mw.states_for(i, rng) for i in range(2000)]
        anti = [mw.scene_for(s, "anti", rng) for s in people]
        self.assertFalse(any(scene in s for scene, s in zip(anti, people)))
        biased = [mw.scene_for(s, "biased", rng) for s in people]
        share = np.mean([scene in s for scene, s in zip(biased, people)])
        self.assertAlmostEqual(share, 0.9, delta=0.03)

    def test_rendering_is_deterministic_in_the_seed(self):
        a = [np.asarray(s.image) for s in mw.sample_split("balanced", 3, seed=4)]
        b = [np.asarray(s.image) for s in mw.sample_split("balanced", 3, seed=4)]
        self.assertTrue(all((x == y).all() for x, y in zip(a, b)))
        s = next(mw.sample_split("anti", 1, seed=4))
        x, y, w, h = s.box
        self.assertTrue(0 <= x and 0 <= y and x + w <= s.image.width and w > 10)


if __name__ == "__main__":
    unittest.main()
