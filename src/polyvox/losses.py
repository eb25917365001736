"""Training losses."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


def world_size() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows, in rank order: (n_rank, ...) here -> (sum of n, ...) everywhere.

    Gradient flows back to each process's own rows (open_clip's ``gather_with_grad``): with every process computing
    the same loss over the gathered rows, the gathered gradient is summed over the processes' copies and DDP's
    averaging turns it back into the gradient of one process holding the whole batch. Processes may hold different
    numbers of rows (padded for the collective, cut after). Without torch.distributed, `x` itself.
    """
    world = world_size()
    if world == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    most = max(int(n) for n in sizes)
    padded = torch.cat([x, x.new_zeros(most - len(x), *x.shape[1:])])
    return torch.cat([part[: int(n)] for part, n in zip(dist_fn.all_gather(padded), sizes)])


def mean_over_processes(total: torch.Tensor, count: int) -> torch.Tensor:
    """`total` / `count` as if one process held every process's items: with N processes, total * N / (the
    processes' summed count), so that DDP's averaging of gradients gives the gradient of the global mean even when
    processes hold different numbers of tokens or items. 0 (with a graph) when no process has any."""
    world = world_size()
    if world > 1:
        n = torch.tensor([float(count)], device=total.device)
        dist.all_reduce(n)
        count, total = n.item(), total * world
    return total / count if count else total * 0.0


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """In-batch softmax contrastive loss over dot products, averaged over both directions.

    Row i of `a` and row i of `b` are a positive pair; every other row of the batch is a negative. With several
    processes, pass the `gather_with_grad` rows so that every process's rows are negatives.

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
