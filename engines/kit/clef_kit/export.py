"""``export_bundle``: a trained CLEF model → an engine bundle the daemon loads unchanged.

Writes ``vanilla.onnx`` and ``context_branch.onnx`` (dynamic batch dimension), links or copies
the face detector, and writes ``manifest.toml`` with the labels, fusion, task, ``Y_e*``, each
input's role, size, layout, colour and normalisation, and the subject/mask settings, and the
golden vectors every start checks the models against (:mod:`clef_kit.golden`).
"""

from __future__ import annotations

import os
import shutil

import torch

from .clef import CLEF
from .sampling import InputSpec, SubjectSpec


def _export_onnx(module: torch.nn.Module, inputs: list[InputSpec], path: str, opset: int) -> None:
    module.eval()
    dummy = tuple(torch.zeros(spec.shape(2)) for spec in inputs)
    names = [spec.name for spec in inputs]
    axes = {n: {0: "batch"} for n in names + ["logits"]}
    with torch.no_grad():
        torch.onnx.export(module, dummy, path, input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True)


def _toml_value(v) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _input_toml(section: str, spec: InputSpec) -> str:
    lines = [f"[[{section}.inputs]]"]
    for key in ("name", "role", "width", "height", "layout", "colour"):
        lines.append(f"{key} = {_toml_value(getattr(spec, key))}")
    lines.append(f"mean = {_toml_value([float(m) for m in spec.mean])}")
    lines.append(f"std = {_toml_value([float(s) for s in spec.std])}")
    return "\n".join(lines)


def _place_detector(out_dir: str, detector_file: str, link: bool) -> str:
    """Copies (or links, relative) the detector into the bundle; its file name."""
    det_name = os.path.basename(detector_file)
    det_dest = os.path.join(out_dir, det_name)
    if os.path.lexists(det_dest):
        os.remove(det_dest)
    if link:
        os.symlink(os.path.relpath(os.path.abspath(detector_file), os.path.abspath(out_dir)), det_dest)
    else:
        shutil.copyfile(detector_file, det_dest)
    return det_name


def _common_tables(detector: dict, det_name: str, subject: SubjectSpec) -> list[str]:
    det = dict(detector, file=det_name)
    anchors = det.pop("anchors")
    return ["[detector]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in det.items()),
            "[detector.anchors]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in anchors.items()),
            "[subject]\n" + "\n".join(f"{k} = {_toml_value(getattr(subject, k))}"
                                       for k in ("face_scale", "body_width", "body_height", "mask", "mask_scale"))]


def export_vanilla_bundle(out_dir: str, module: torch.nn.Module, *, name: str, version: str, labels: list[str],
                          inputs: list[InputSpec], detector: dict, detector_file: str,
                          subject: SubjectSpec | None = None, description: str = "", opset: int = 13,
                          link_detector: bool = False, thresholds: list[float] | None = None) -> str:
    """A bundle of one model without a context branch (debias off): how a model trained
    without CLEF, the fair baseline, runs through the daemon and ``clefd eval``. With
    ``thresholds`` (one per label) it is a multi-label bundle. Returns the manifest's path."""
    if thresholds is not None and len(thresholds) != len(labels):
        raise ValueError("multi_label bundles need one threshold per label")
    subject = subject or SubjectSpec()
    os.makedirs(out_dir, exist_ok=True)
    _export_onnx(module, inputs, os.path.join(out_dir, "vanilla.onnx"), opset)
    det_name = _place_detector(out_dir, detector_file, link_detector)
    head = [
        "# Written by engines/kit (clef_kit.export_vanilla_bundle): no context branch, debias off.",
        f"name = {_toml_value(name)}",
        f"version = {_toml_value(version)}",
        f"description = {_toml_value(description)}",
        f'task = "{"single_label" if thresholds is None else "multi_label"}"',
        f"labels = {_toml_value(list(labels))}",
    ]
    if thresholds is not None:
        head.append(f"thresholds = {_toml_value([float(t) for t in thresholds])}")
    parts = ["\n".join(head), *_common_tables(detector, det_name, subject),
             '[vanilla]\nfile = "vanilla.onnx"\noutput = "logits"', *(_input_toml("vanilla", s) for s in inputs)]
    path = os.path.join(out_dir, "manifest.toml")
    with open(path, "w") as f:
        f.write("\n\n".join(parts) + "\n")
    from .golden import write_golden

    write_golden(out_dir)
    return path


def export_bundle(out_dir: str, model: CLEF, *, name: str, version: str, labels: list[str],
                  vanilla_inputs: list[InputSpec], context_inputs: list[InputSpec], detector: dict,
                  detector_file: str, subject: SubjectSpec | None = None, description: str = "",
                  thresholds: list[float] | None = None, opset: int = 13, link_detector: bool = False,
                  fused: bool = False) -> str:
    """Writes the bundle into ``out_dir`` and returns the manifest's path.

    ``detector`` is the manifest's ``[detector]`` table (kind, input names, thresholds and an
    ``anchors`` sub-table), with ``file`` set to the basename of ``detector_file``, which is
    copied into the bundle (or symlinked, relative, with ``link_detector``). With ``fused``
    the bundle also gets ``clef_fused.onnx``, both models and CLEF in one graph, so the
    daemon computes the subtraction on the accelerator (:mod:`clef_kit.fuse`).
    """
    if len(labels) != model.y_e_star.numel():
        raise ValueError(f"{len(labels)} labels but the model has {model.y_e_star.numel()} outputs")
    if model.task == "multi_label" and (thresholds is None or len(thresholds) != len(labels)):
        raise ValueError("multi_label bundles need one threshold per label")
    subject = subject or SubjectSpec()
    os.makedirs(out_dir, exist_ok=True)
    _export_onnx(model.vanilla, vanilla_inputs, os.path.join(out_dir, "vanilla.onnx"), opset)
    _export_onnx(model.context_branch, context_inputs, os.path.join(out_dir, "context_branch.onnx"), opset)
    det_name = _place_detector(out_dir, detector_file, link_detector)
    y_e_star = [float(v) for v in model.y_e_star.detach().float().cpu()]
    head = [
        "# Written by engines/kit (clef_kit.export_bundle); the daemon loads it unchanged.",
        f"name = {_toml_value(name)}",
        f"version = {_toml_value(version)}",
        f"description = {_toml_value(description)}",
        f"task = {_toml_value(model.task)}",
        f"labels = {_toml_value(list(labels))}",
        f"fusion = {_toml_value(model.fusion)}",
        f"counterfactual_e = {_toml_value(y_e_star)}",
    ]
    if thresholds is not None:
        head.append(f"thresholds = {_toml_value([float(t) for t in thresholds])}")
    parts = ["\n".join(head), *_common_tables(detector, det_name, subject),
             '[vanilla]\nfile = "vanilla.onnx"\noutput = "logits"',
             *(_input_toml("vanilla", s) for s in vanilla_inputs),
             '[context_branch]\nfile = "context_branch.onnx"\noutput = "logits"',
             *(_input_toml("context_branch", s) for s in context_inputs)]
    path = os.path.join(out_dir, "manifest.toml")
    with open(path, "w") as f:
        f.write("\n\n".join(parts) + "\n")
    fused_path = os.path.join(out_dir, "clef_fused.onnx")
    if fused:
        from .fuse import fuse_bundle

        fuse_bundle(out_dir)
    elif os.path.exists(fused_path):
        os.remove(fused_path)
    from .golden import write_golden

    write_golden(out_dir)
    return path
