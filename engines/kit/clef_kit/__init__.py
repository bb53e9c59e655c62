"""clef_kit: train any context-aware emotion recognition (CAER) model with CLEF's
counterfactual objective and export it as a clefd engine bundle.

- :mod:`clef_kit.clef`: the CLEF wrapper (factual, counterfactual, TIE) and its loss.
- :mod:`clef_kit.sampling`: the daemon's preprocessing, so training sees the field's pixels.
- :mod:`clef_kit.export`: ``export_bundle`` → ONNX files + ``manifest.toml``; ``export_vanilla_bundle``
  for a model without a context branch (the fair baseline).
- :mod:`clef_kit.fuse`: ``fuse_bundle`` → ``clef_fused.onnx``, both models and CLEF in one graph,
  so the daemon computes the subtraction on the accelerator (``python -m clef_kit.fuse DIR``).
- :mod:`clef_kit.world`: a procedural world with a known context bias;
  :mod:`clef_kit.multi_world` its multi-label version (one or two of six states per person).
- :mod:`clef_kit.train`: ``python -m clef_kit.train --dataset caer-s:DIR|emotic:DIR``, paper-style
  models (:mod:`clef_kit.models`) trained with CLEF on the datasets as distributed
  (:mod:`clef_kit.datasets`; faces found by ``clefd faces``, :mod:`clef_kit.faces`), with
  checkpoints, exported as bundles; :mod:`clef_kit.fixtures` writes small stand-ins in their layouts.
- :mod:`clef_kit.evaluate`: accuracy of factual and TIE decisions on a dataset folder.
"""

from .clef import CLEF, ClefLoss, ClefOutput, clef_loss, fuse
from .export import export_bundle, export_vanilla_bundle
from .sampling import InputSpec, SubjectSpec

__all__ = ["CLEF", "ClefLoss", "ClefOutput", "clef_loss", "fuse", "export_bundle", "export_vanilla_bundle", "InputSpec", "SubjectSpec"]
