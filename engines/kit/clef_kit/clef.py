"""CLEF around any CAER model: factual, counterfactual and TIE outputs, and the training loss.

The daemon computes the same quantities in Rust (``src/clef.rs``); the two agree to 1e-5 on
``tests/clef_reference/vectors.json``. Notation (DESIGN.md §2): ``Y_e`` are the vanilla CAER
model's logits, ``Y_c`` the context-only branch's, ``Y_e*`` a learned constant per label.

    factual        = φ(Y_c, Y_e)
    counterfactual = φ(Y_c, Y_e*)
    TIE            = factual − counterfactual
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS = ("sum", "hm", "rubi")
TASKS = ("single_label", "multi_label")


def fuse(y_c: torch.Tensor, y_e: torch.Tensor, fusion: str = "sum") -> torch.Tensor:
    """φ(Y_c, Y_e), elementwise and numerically stable for any finite input.

    ``sum`` (CLEF's Eq. 11): log σ(a + b). ``hm``: log(z / (1 + z)) with z = σ(a)·σ(b), which
    equals log σ(log σ(a) + log σ(b)). ``rubi``: b · σ(a).
    """
    if fusion == "sum":
        return F.logsigmoid(y_c + y_e)
    if fusion == "hm":
        return F.logsigmoid(F.logsigmoid(y_c) + F.logsigmoid(y_e))
    if fusion == "rubi":
        return y_e * torch.sigmoid(y_c)
    raise ValueError(f"unknown fusion '{fusion}': use one of {', '.join(FUSIONS)}")


@dataclass
class ClefOutput:
    """Every quantity of one forward pass, each ``[batch, K]``."""

    y_e: torch.Tensor
    y_c: torch.Tensor
    factual: torch.Tensor
    counterfactual: torch.Tensor
    tie: torch.Tensor


class CLEF(nn.Module):
    """Wraps a vanilla CAER model and a context-only branch (any ``nn.Module`` each).

    ``vanilla(*vanilla_inputs)`` and ``context_branch(*context_inputs)`` must each return
    ``[batch, K]`` logits. ``Y_e*`` is one learnable value per label shared by all samples,
    initialised equal for every label so the counterfactual starts out uniform.
    """

    def __init__(self, vanilla: nn.Module, context_branch: nn.Module, num_labels: int, fusion: str = "sum",
                 task: str = "single_label", y_e_star_init: float = 0.0):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}': use one of {', '.join(FUSIONS)}")
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}': use one of {', '.join(TASKS)}")
        self.vanilla = vanilla
        self.context_branch = context_branch
        self.fusion = fusion
        self.task = task
        self.y_e_star = nn.Parameter(torch.full((num_labels,), float(y_e_star_init)))

    def effects(self, y_e: torch.Tensor, y_c: torch.Tensor) -> ClefOutput:
        """The CLEF quantities from given logits (what the daemon does after inference)."""
        factual = fuse(y_c, y_e, self.fusion)
        counterfactual = fuse(y_c, self.y_e_star.expand_as(y_c), self.fusion)
        return ClefOutput(y_e, y_c, factual, counterfactual, factual - counterfactual)

    def forward(self, vanilla_inputs, context_inputs) -> ClefOutput:
        y_e = self.vanilla(*vanilla_inputs)
        y_c = self.context_branch(*context_inputs)
        return self.effects(y_e, y_c)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """What an event reports for ``logits``: softmax (single-label) or sigmoid (multi-label)."""
        return torch.softmax(logits, -1) if self.task == "single_label" else torch.sigmoid(logits)


@dataclass
class ClefLoss:
    """The three terms of CLEF's objective and their weighted sum."""

    total: torch.Tensor
    factual: torch.Tensor
    counterfactual: torch.Tensor
    kl: torch.Tensor


def clef_loss(model: CLEF, out: ClefOutput, target: torch.Tensor, kl_weight: float = 1.0) -> ClefLoss:
    """``CE(φ(Y_c,Y_e), y) + CE(φ(Y_c,Y_e*), y) + kl_weight · KL`` (CLEF Eqs. 12-14).

    Single-label targets are class indices and use cross-entropy; multi-label targets are
    0/1 per label and use binary cross-entropy on the fused logits. The KL term is computed as
    Counterfactual VQA does, ``−Σ p_factual · log p_counterfactual``, with the factual side
    detached and ``Y_c`` detached on the counterfactual side, so that only ``Y_e*`` moves to
    match the factual distribution (neither dominating nor vanishing).
    """
    cf_for_kl = fuse(out.y_c.detach(), model.y_e_star.expand_as(out.y_c), model.fusion)
    if model.task == "single_label":
        factual = F.cross_entropy(out.factual, target)
        counterfactual = F.cross_entropy(out.counterfactual, target)
        p = torch.softmax(out.factual.detach(), -1)
        kl = -(p * F.log_softmax(cf_for_kl, -1)).sum(-1).mean()
    else:
        target = target.float()
        factual = F.binary_cross_entropy_with_logits(out.factual, target)
        counterfactual = F.binary_cross_entropy_with_logits(out.counterfactual, target)
        p = torch.sigmoid(out.factual.detach())
        kl = F.binary_cross_entropy_with_logits(cf_for_kl, p)
    total = factual + counterfactual + kl_weight * kl
    return ClefLoss(total, factual, counterfactual, kl)
