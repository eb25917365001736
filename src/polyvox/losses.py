"""Training losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """In-batch softmax contrastive loss over dot products, averaged over both directions.

    Row i of `a` and row i of `b` are a positive pair; every other row of the batch is a negative.

    Args:
        a: (B, E) embeddings, e.g. speech.
        b: (B, E) embeddings, e.g. text.
        scale: inverse temperature multiplying the dot products.
    """
    logits = scale * a @ b.T  # (B, B)
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def spread_out(x: torch.Tensor) -> torch.Tensor:
    """Global orthogonal regulariser (Zhang et al. 2017) on L2-normalised embeddings (B, E).

    Pushes non-matching pairs towards the statistics of uniformly spread points:
    mean dot product -> 0 and mean squared dot product -> 1/E.
    """
    b, e = x.shape
    if b < 2:
        return x.new_zeros(())
    sims = x @ x.T  # (B, B)
    off = sims[~torch.eye(b, dtype=torch.bool, device=x.device)]
    return off.mean() ** 2 + F.relu(off.pow(2).mean() - 1.0 / e)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of next-token distributions, mean over positions, scaled by T².

    Args:
        student: (N, V) logits of the model being trained (speech input).
        teacher: (N, V) logits of the same LLM on the text input at the same target positions.
        temperature: softmax temperature of both distributions.
    """
    t = temperature
    log_p = F.log_softmax(teacher.detach() / t, dim=-1)
    log_q = F.log_softmax(student / t, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * t * t
