"""Paper-style models for real data: CAER-Net for CAER-S, EMOT-Net for EMOTIC.

CLEF (CVPR 2024) wraps existing CAER models; it reports CAER-Net (Lee et al., ICCV 2019) on
CAER-S and EMOT-Net (Kosti et al., TPAMI 2019) on EMOTIC. Both are rebuilt here at the
shape the papers describe and a size that still trains on a CPU: two convolutional streams
whose features are fused, plus CLEF's context-only branch on the masked context. Their
layers are plain ``Conv2d``/``BatchNorm2d``/``Linear``, so a local weights file (a
``state_dict``) can seed them; nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from .demo_model import CaerNetLite, ContextOnly, Stream


def caer_net(num_labels: int) -> nn.Module:
    """CAER-Net: a face stream and a masked-context stream, adaptively weighted, fused."""
    return CaerNetLite(num_labels, face_channels=3, context_channels=3, features=128,
                       face_widths=(32, 64, 128), context_widths=(32, 64, 128))


class EmotNet(nn.Module):
    """EMOT-Net: a body stream and a whole-image stream, features concatenated and fused."""

    def __init__(self, num_labels: int, features: int = 128):
        super().__init__()
        self.body = Stream(3, widths=(32, 64, 128), features=features)
        self.image = Stream(3, widths=(32, 64, 128), features=features)
        self.fusion = nn.Sequential(nn.Linear(2 * features, features), nn.BatchNorm1d(features),
                                    nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(features, num_labels))

    def forward(self, body: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([self.body(body), self.image(image)], 1))


def context_branch(num_labels: int, bound: float = 3.0) -> nn.Module:
    """CLEF's context-only branch: the picture with the subject hidden → logits."""
    return ContextOnly(num_labels, features=96, bound=bound, widths=(32, 64, 96))
