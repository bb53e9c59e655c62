"""Model copies that break in known ways, for proving that engine acceptance catches them.

- :func:`fp16_copy`: what an FP16 engine does to a model: every float weight stored in
  float16, and every intermediate tensor rounded to float16 (a Cast there and back after each
  node), while inputs and outputs stay float32, so it runs on ONNX Runtime's CPU provider.
- :func:`perturb_bias`: one bias (the last float initializer of rank 1 feeding the output
  layer, unless named) shifted by ``amount``: a wrong model that still loads and runs.

    python -m clef_kit.onnx_tools fp16 IN.onnx OUT.onnx
    python -m clef_kit.onnx_tools perturb IN.onnx OUT.onnx [--amount 0.5] [--name INIT]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fp16_copy(src: str, dst: str) -> None:
    """Writes ``src`` with float16 weights and float16-rounded activations to ``dst``."""
    model = onnx.load(src)
    typed = onnx.shape_inference.infer_shapes(model).graph
    floats = {v.name for v in list(typed.value_info) + list(typed.output)
              if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    g = model.graph
    nodes = []
    for init in list(g.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "/fp16")
        g.initializer.remove(init)
        g.initializer.append(half)
        nodes.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "/widen"))
    outputs = {o.name for o in g.output}
    for node in g.node:
        nodes.append(node)
        if node.op_type in ("Shape", "Constant", "Cast") or not node.output:
            continue
        out = node.output[0]
        if out in outputs or out not in floats:
            continue
        # Rename the node's output; a round trip through float16 restores the old name.
        raw = out + "/fp32"
        node.output[0] = raw
        nodes.append(helper.make_node("Cast", [raw], [out + "/half"], to=TensorProto.FLOAT16, name=out + "/narrow"))
        nodes.append(helper.make_node("Cast", [out + "/half"], [out], to=TensorProto.FLOAT, name=out + "/round"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    onnx.save(model, dst)


def perturb_bias(src: str, dst: str, amount: float = 0.5, name: str | None = None) -> str:
    """Writes ``src`` with one rank-1 float initializer shifted by ``amount``; its name."""
    model = onnx.load(src)
    candidates = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 1]
    if name is not None:
        candidates = [i for i in candidates if i.name == name]
    if not candidates:
        raise ValueError(f"{src}: no rank-1 float initializer{'' if name is None else ' named ' + name}")
    init = candidates[-1]
    values = numpy_helper.to_array(init).astype(np.float32) + np.float32(amount)
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, dst)
    return init.name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clef_kit.onnx_tools", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["fp16", "perturb"])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--amount", type=float, default=0.5, help="perturb: added to the bias (default 0.5)")
    p.add_argument("--name", help="perturb: the initializer to shift (default: the last rank-1 one)")
    args = p.parse_args(argv)
    try:
        if args.what == "fp16":
            fp16_copy(args.src, args.dst)
        else:
            print(f"shifted {perturb_bias(args.src, args.dst, args.amount, args.name)} by {args.amount}")
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        print(f"clef_kit.onnx_tools: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
