"""``fuse_bundle``: CLEF's subtraction inside the engine, for any bundle with a context branch.

The daemon's host path runs ``vanilla.onnx`` and ``context_branch.onnx`` on the accelerator,
copies both logit vectors back, and computes φ(Y_c,Y_e), φ(Y_c,Y_e*) and the TIE on the CPU.
A fused bundle holds one more graph, ``clef_fused.onnx``: both models side by side on the
union of their inputs, followed by the fusion function with ``Y_e*`` baked in, so TensorRT or
CUDA compute CLEF where the logits already are and the host only reads results. Its outputs:

    y_e, y_c, factual, counterfactual, tie      (each [batch, K])

The graph is composed at the ONNX level from the bundle's own files, so it works for bundles
the kit did not write. The manifest gains a ``[fused]`` table (file and inputs); the daemon
uses it unless told to compute CLEF on the host. φ is written in forms that stay finite in
float32 and float16 for any finite input: log σ(x) = min(x, 0) − log(1 + e^−|x|), and σ(x)
as e^(log σ(x)).

    python -m clef_kit.fuse engines/context-bias-demo
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib

import numpy as np
import onnx
from onnx import helper, numpy_helper

FUSED_FILE = "clef_fused.onnx"
OUTPUTS = ("y_e", "y_c", "factual", "counterfactual", "tie")


class _Graph:
    """Nodes and constants being appended to the fused graph, with fresh names."""

    def __init__(self):
        self.nodes: list = []
        self.constants: list = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"clef/{stem}_{self._n}"

    def op(self, op_type: str, *inputs: str, out: str | None = None) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(op_type)))
        return out

    def const(self, values, stem: str) -> str:
        name = self.name(stem)
        self.constants.append(numpy_helper.from_array(np.asarray(values, dtype=np.float32), name))
        return name

    def log_sigmoid(self, x: str) -> str:
        zero, one = self.const(0.0, "zero"), self.const(1.0, "one")
        tail = self.op("Log", self.op("Add", one, self.op("Exp", self.op("Neg", self.op("Abs", x)))))
        return self.op("Sub", self.op("Min", x, zero), tail)

    def fuse(self, y_c: str, b: str, fusion: str, out: str) -> str:
        """φ(Y_c, b) as in ``clef_kit.clef.fuse`` and ``src/clef.rs``."""
        if fusion == "sum":
            return self.op("Identity", self.log_sigmoid(self.op("Add", y_c, b)), out=out)
        if fusion == "hm":
            return self.op("Identity", self.log_sigmoid(self.op("Add", self.log_sigmoid(y_c), self.log_sigmoid(b))),
                           out=out)
        if fusion == "rubi":
            # σ(a) = e^(log σ(a)): exact in the tails, where ONNX Runtime's Sigmoid clamps.
            return self.op("Mul", b, self.op("Exp", self.log_sigmoid(y_c)), out=out)
        raise ValueError(f"unknown fusion '{fusion}': use sum, hm or rubi")


def _prefixed(model: onnx.ModelProto, prefix: str, keep: set[str]) -> onnx.GraphProto:
    """The model's graph with every internal name prefixed (inputs in ``keep`` keep theirs)."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    rename = {}
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if v.name not in keep:
            rename[v.name] = prefix + v.name
    for init in graph.initializer:
        rename[init.name] = prefix + init.name
    for node in graph.node:
        for o in node.output:
            rename.setdefault(o, prefix + o)
        node.name = prefix + node.name
    for node in graph.node:
        node.input[:] = [rename.get(i, i) if i else i for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
        for v in coll:
            v.name = rename.get(v.name, v.name)
    return graph


def _input_key(spec: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in spec.items()))


def fused_model(vanilla: onnx.ModelProto, context_branch: onnx.ModelProto, *, vanilla_inputs: list[dict],
                context_inputs: list[dict], vanilla_output: str, context_output: str, fusion: str,
                y_e_star: list[float]) -> tuple[onnx.ModelProto, list[dict]]:
    """One graph computing both models and CLEF; returns it and its manifest inputs.

    Inputs the two models share by name and by manifest spec are fed once; an input of the
    context branch whose name the vanilla model uses differently is renamed
    ``context_branch/<name>``.
    """
    vanilla_specs = {s["name"]: s for s in vanilla_inputs}
    inputs = list(vanilla_inputs)
    cb_rename = {}
    for s in context_inputs:
        same = vanilla_specs.get(s["name"])
        if same is None:
            inputs.append(s)
        elif _input_key(same) != _input_key(s):
            cb_rename[s["name"]] = "context_branch/" + s["name"]
            inputs.append(dict(s, name=cb_rename[s["name"]]))
    names = {s["name"] for s in inputs}
    v = _prefixed(vanilla, "vanilla/", names)
    c_model = onnx.ModelProto()
    c_model.CopyFrom(context_branch)
    for node in c_model.graph.node:
        node.input[:] = [cb_rename.get(i, i) for i in node.input]
    for i in c_model.graph.input:
        i.name = cb_rename.get(i.name, i.name)
    c = _prefixed(c_model, "context_branch/", names)
    g = _Graph()
    y_e = g.op("Identity", "vanilla/" + vanilla_output, out="y_e")
    y_c = g.op("Identity", "context_branch/" + context_output, out="y_c")
    star = g.const(y_e_star, "y_e_star")
    factual = g.fuse(y_c, y_e, fusion, "factual")
    counterfactual = g.fuse(y_c, star, fusion, "counterfactual")
    g.op("Sub", factual, counterfactual, out="tie")
    graph_inputs, seen = [], set()
    for vi in list(v.input) + list(c.input):
        if vi.name in names and vi.name not in seen:
            seen.add(vi.name)
            graph_inputs.append(vi)
    out_type = next(o for o in v.output if o.name == "vanilla/" + vanilla_output)
    outputs = []
    for name in OUTPUTS:
        o = onnx.ValueInfoProto()
        o.CopyFrom(out_type)
        o.name = name
        outputs.append(o)
    graph = helper.make_graph(list(v.node) + list(c.node) + g.nodes, "clef_fused", graph_inputs, outputs,
                              initializer=list(v.initializer) + list(c.initializer) + g.constants)
    opsets = {o.domain: o.version for o in vanilla.opset_import}
    for o in context_branch.opset_import:
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="clef_kit.fuse")
    model.ir_version = max(vanilla.ir_version, context_branch.ir_version)
    onnx.checker.check_model(model)
    return model, inputs


def _toml_inputs(inputs: list[dict]) -> str:
    from .export import _toml_value

    blocks = []
    for s in inputs:
        blocks.append("[[fused.inputs]]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in s.items()))
    return "\n\n".join(blocks)


def fuse_bundle(bundle_dir: str) -> str:
    """Writes ``clef_fused.onnx`` into a bundle with a context branch and adds (or replaces)
    its manifest's ``[fused]`` table. Returns the fused graph's path."""
    path = os.path.join(bundle_dir, "manifest.toml")
    with open(path, "rb") as f:
        manifest = tomllib.load(f)
    if "context_branch" not in manifest:
        raise ValueError(f"{path}: no [context_branch]: there is no CLEF to fuse (debiasing is off)")
    star = manifest.get("counterfactual_e", 0.0)
    star = [float(star)] if isinstance(star, (int, float)) else [float(s) for s in star]
    vanilla, cb = manifest["vanilla"], manifest["context_branch"]
    model, inputs = fused_model(
        onnx.load(os.path.join(bundle_dir, vanilla["file"])), onnx.load(os.path.join(bundle_dir, cb["file"])),
        vanilla_inputs=vanilla["inputs"], context_inputs=cb["inputs"], vanilla_output=vanilla["output"],
        context_output=cb["output"], fusion=manifest.get("fusion", "sum"), y_e_star=star)
    out = os.path.join(bundle_dir, FUSED_FILE)
    onnx.save(model, out)
    with open(path) as f:
        text = f.read()
    # Fusing again replaces the earlier [fused] table and the comment above it.
    for marker in ("\n# One graph: both models and CLEF", "\n[fused]"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut + 1]
    text = text.rstrip("\n") + "\n\n" + "\n".join([
        "# One graph: both models and CLEF (outputs y_e, y_c, factual, counterfactual, tie),",
        "# written by clef_kit.fuse from the two models above; the daemon computes CLEF on the",
        "# accelerator with it.",
        "[fused]",
        f'file = "{FUSED_FILE}"',
    ]) + "\n\n" + _toml_inputs(inputs) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clef_kit.fuse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="+", help="engine bundle folders (each with a manifest.toml)")
    args = p.parse_args(argv)
    for b in args.bundle:
        try:
            print(f"wrote {fuse_bundle(b)}")
        except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError, onnx.checker.ValidationError) as e:
            print(f"clef_kit.fuse: {b}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
