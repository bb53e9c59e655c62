"""A small CAER-Net-style model for the context-bias world, and its context-only branch.

CAER-Net (Lee et al., ICCV 2019) has a face stream, a context stream that sees the picture
with the face hidden, and an adaptive fusion that weighs the two per sample. This is the same
shape at a size that trains on a CPU in minutes. Any other pair of modules works with the kit.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Stream(nn.Module):
    """A small convolutional encoder: image → feature vector (global average pooled)."""

    def __init__(self, channels: int, widths=(16, 32, 64), features: int = 64):
        super().__init__()
        layers, cin = [], channels
        for w in widths:
            layers += [_block(cin, w, 1), _block(w, w, 2)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(self.body(x).mean(dim=(2, 3))))


class CaerNetLite(nn.Module):
    """Face stream + masked-context stream + adaptive fusion → K logits (the vanilla model)."""

    def __init__(self, num_labels: int, face_channels: int = 1, context_channels: int = 3, features: int = 64,
                 face_widths=(16, 32, 64), context_widths=(16, 32, 48)):
        super().__init__()
        self.face = Stream(face_channels, widths=face_widths, features=features)
        self.context = Stream(context_channels, widths=context_widths, features=features)
        self.face_weight = nn.Linear(features, 1)
        self.context_weight = nn.Linear(features, 1)
        self.head = nn.Sequential(nn.Linear(2 * features, features), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(features, num_labels))

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        f, c = self.face(face), self.context(context)
        weights = torch.softmax(torch.cat([self.face_weight(f), self.context_weight(c)], 1), 1)
        return self.head(torch.cat([f * weights[:, :1], c * weights[:, 1:]], 1))


class ContextOnly(nn.Module):
    """The context-only branch: the masked context alone → K logits (the bias path X → C → Y).

    Its logits are bounded to ``±bound`` (a scaled tanh). A scene that predicts a label
    perfectly would otherwise drive ``Y_c`` to ±∞ during training, saturating
    ``log σ(Y_c + Y_e)``: the vanilla model then gets no gradient on most samples and the
    TIE of a context-matching label collapses to 0. Bounded, the context shifts the fused
    logits by at most ``2·bound`` and the TIE keeps the face's evidence.
    """

    def __init__(self, num_labels: int, channels: int = 3, features: int = 48, bound: float = 3.0,
                 widths=(16, 32, 48)):
        super().__init__()
        self.context = Stream(channels, widths=widths, features=features)
        self.head = nn.Linear(features, num_labels)
        self.bound = float(bound)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.context(context))
        return logits if self.bound <= 0 else self.bound * torch.tanh(logits / self.bound)
