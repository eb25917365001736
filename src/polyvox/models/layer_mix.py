"""A learned weighted sum of a frozen encoder's layers (the paper's MMS `multilayer_feature`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightedLayerSum(nn.Module):
    """Mix L layers' hidden states with softmax-normalised learned weights, initialised uniform.

    Args:
        num_layers: L, the number of hidden-state tensors mixed (e.g. `SpeechEncoder.layer + 1` with
            `SpeechEncoder.hidden_states`, which includes the conv stem).
        norm: LayerNorm (no affine) each layer before mixing, so layers whose scales differ (Whisper's
            last layer is normed, the others are not) contribute by their weight, not by their magnitude.
    """

    def __init__(self, num_layers: int, norm: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.norm = norm
        self.logits = nn.Parameter(torch.zeros(num_layers))  # zeros -> softmax is uniform

    @property
    def weights(self) -> torch.Tensor:
        """(L,) mixing weights, summing to 1."""
        return self.logits.softmax(0)

    def forward(self, layers: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """layers: L tensors (B, T, D), or one (L, B, T, D) stack -> (B, T, D)."""
        x = torch.stack(list(layers)) if not isinstance(layers, torch.Tensor) else layers  # (L, B, T, D)
        if x.shape[0] != len(self.logits):
            raise ValueError(f"expected {len(self.logits)} layers, got {x.shape[0]}")
        if self.norm:
            x = F.layer_norm(x, x.shape[-1:])
        w = self.weights.to(x.dtype)
        return (w[:, None, None, None] * x).sum(0)  # (B, T, D)
