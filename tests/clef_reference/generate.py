#!/usr/bin/env python3
"""Reference vectors for clefd's CLEF math, from an independent NumPy implementation.

Writes vectors.json next to this file. Each case holds Y_c, Y_e, Y_e* and the expected
factual φ(Y_c,Y_e), counterfactual φ(Y_c,Y_e*), TIE, softmax(TIE) and sigmoid(TIE), all
computed in float64 with NumPy's logaddexp (log σ(x) = −logaddexp(0, −x)), which shares
no code with the Rust side. Rerun: python3 tests/clef_reference/generate.py
"""
import json
import os

import numpy as np


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def fuse(kind, a, b):
    if kind == "sum":
        return log_sigmoid(a + b)
    if kind == "hm":
        # z = σ(a)σ(b); log(z / (1 + z)) = log z − log(1 + z)
        log_z = log_sigmoid(a) + log_sigmoid(b)
        return log_z - np.logaddexp(0.0, log_z)
    if kind == "rubi":
        sig = np.where(a >= 0, 1 / (1 + np.exp(-np.abs(a))), np.exp(-np.abs(a)) / (1 + np.exp(-np.abs(a))))
        return b * sig
    raise ValueError(kind)


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def sigmoid(x):
    return np.exp(log_sigmoid(x))


def main():
    rng = np.random.default_rng(20240318)
    cases = []
    scales = [1.0, 5.0, 50.0, 1e3, 1e4]
    for fusion in ("sum", "hm", "rubi"):
        for scale in scales:
            for k, star_scalar in ((7, False), (26, False), (7, True)):
                y_c = rng.normal(0, scale, k).astype(np.float32).astype(np.float64)
                y_e = rng.normal(0, scale, k).astype(np.float32).astype(np.float64)
                star = rng.normal(0, scale, 1 if star_scalar else k).astype(np.float32).astype(np.float64)
                star_b = np.broadcast_to(star, (k,))
                f = fuse(fusion, y_c, y_e)
                cf = fuse(fusion, y_c, star_b)
                tie = f - cf
                cases.append(
                    {
                        "fusion": fusion,
                        "y_c": y_c.tolist(),
                        "y_e": y_e.tolist(),
                        "y_e_star": star.tolist(),
                        "factual": f.tolist(),
                        "counterfactual": cf.tolist(),
                        "tie": tie.tolist(),
                        "softmax_tie": softmax(tie).tolist(),
                        "sigmoid_tie": sigmoid(tie).tolist(),
                    }
                )
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    with open(path, "w") as f:
        json.dump({"generator": "tests/clef_reference/generate.py", "cases": cases}, f, indent=1)
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
