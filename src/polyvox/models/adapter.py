"""Modality adapters: frozen speech-encoder frames (B, T, D_enc) -> LLM input embeddings (B, T', D_llm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


class ConvGLUAdapter(nn.Module):
    """BLSP's adapter: three Conv1d (kernel 5, stride 2, GLU) = 8x downsampling, then a residual
    bottleneck (width -> hidden -> width, GELU) and LayerNorm.

    Padding frames are zeroed before every convolution, so a clip's output does not depend on what it is
    batched with.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, kernel: int = 5, num_convs: int = 3):
        super().__init__()
        self.kernel = kernel
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else out_dim, 2 * out_dim, kernel, stride=2, padding=kernel // 2)
            for i in range(num_convs)
        )
        self.bottleneck = nn.Sequential(nn.Linear(out_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.norm = nn.LayerNorm(out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in self.convs:
            lengths = (lengths + 2 * (self.kernel // 2) - self.kernel) // 2 + 1
        return lengths.clamp(min=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D_enc), lengths: (B,) valid frames -> (B, T/8, D_llm) and their valid lengths."""
        x = x.transpose(1, 2)  # (B, D, T)
        for conv in self.convs:
            x = x * _mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
            x = F.glu(conv(x), dim=1)  # (B, D_llm, ~T/2)
            lengths = (lengths + 2 * (self.kernel // 2) - self.kernel) // 2 + 1
        x = x.transpose(1, 2)  # (B, T', D_llm)
        x = self.norm(x + self.bottleneck(x))
        return x, lengths.clamp(min=1)


class StackMLPAdapter(nn.Module):
    """A lighter adapter: concatenate `stack` consecutive frames, then Linear -> GELU -> Linear, LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, stack: int = 8):
        super().__init__()
        self.stack = stack
        self.mlp = nn.Sequential(nn.Linear(in_dim * stack, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.norm = nn.LayerNorm(out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths + self.stack - 1) // self.stack).clamp(min=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        x = x * _mask(lengths, t)[..., None].to(x.dtype)
        pad = (-t) % self.stack
        x = F.pad(x, (0, 0, 0, pad)).reshape(b, (t + pad) // self.stack, self.stack * d)  # (B, T/s, s*D)
        return self.norm(self.mlp(x)), self.out_lengths(lengths)


class ResidualConvAdapter(nn.Module):
    """Local, n-gram-like mixing of frames: LayerNorm -> Linear to `hidden`, `blocks` residual blocks
    (pre-LayerNorm, Conv1d with kernel `kernel` and GLU, dropout), optional average-pool by `stride`,
    Linear to the LLM width, LayerNorm. Keeps the frame rate unless `stride` > 1.

    With little paired data, a local inductive bias over speech frames generalises where attention over
    the whole clip memorises sentences (see the README's ablation table).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, blocks: int = 2, kernel: int = 5,
                 stride: int = 1, dropout: float = 0.3):
        super().__init__()
        self.stride = stride
        self.inp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden, kernel, padding=kernel // 2) for _ in range(blocks))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths + self.stride - 1) // self.stride).clamp(min=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D_enc), lengths: (B,) valid frames -> (B, T/stride, D_llm) and their valid lengths."""
        valid = _mask(lengths, x.shape[1])[..., None].to(x.dtype)  # (B, T, 1)
        h = self.inp(x) * valid  # (B, T, H)
        for norm, conv in zip(self.norms, self.convs):
            y = F.glu(conv((norm(h) * valid).transpose(1, 2)), dim=1).transpose(1, 2)  # (B, T, H)
            h = (h + self.drop(y)) * valid
        if self.stride > 1:
            b, t, d = h.shape
            pad = (-t) % self.stride
            h = F.pad(h, (0, 0, 0, pad)).reshape(b, (t + pad) // self.stride, self.stride, d)
            n = F.pad(valid, (0, 0, 0, pad)).reshape(b, (t + pad) // self.stride, self.stride, 1)
            h = h.sum(2) / n.sum(2).clamp(min=1)  # (B, T/stride, H): mean over valid frames
        return self.norm(self.out(h)), self.out_lengths(lengths)


ADAPTERS: dict[str, type[nn.Module]] = {"conv-glu": ConvGLUAdapter, "stack-mlp": StackMLPAdapter,
                                        "conv-res": ResidualConvAdapter}


def build_adapter(name: str, in_dim: int, out_dim: int, hidden: int = 512, stack: int = 8,
                  out_scale: float | None = None, **options) -> nn.Module:
    """An adapter from the registry; `out_scale` sets the final LayerNorm's gain (e.g. to the RMS of the
    LLM's text embeddings, so adapter outputs start at the scale the LLM expects); `options` go to the
    adapter's constructor."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    kwargs = {"stack": stack} if name == "stack-mlp" else {}
    adapter = ADAPTERS[name](in_dim, out_dim, hidden=hidden, **kwargs, **options)
    if out_scale is not None:
        with torch.no_grad():
            adapter.norm.weight.fill_(out_scale)
    return adapter
