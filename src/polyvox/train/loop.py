"""One explicit training loop on accelerate: CPU, one GPU or many (DDP) with the same code."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyvox.config import TrainConfig
from polyvox.sysmem import trim_heap
from polyvox.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

TRIM_EVERY = 3
"""Steps between handing freed heap back to the system. Batches of varying shapes fragment glibc's heaps once
a process has freed large buffers (after encoding speech, say): the demo's training then took about 180 MB of
fresh memory a step, and peaked at 4.8 GB when trimming every 10 steps. Trimming every step held it at 3.2 GB
but made steps about 0.3 s (15 %) slower, mostly from faulting the returned pages back in."""

# loss_fn(model, micro_batch) -> (loss, metrics); batches(step, rank, world) -> the step's micro-batches.
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
BatchFn = Callable[[int, int, int], list[Any]]


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10 % of the peak."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def train(model: nn.Module, param_groups: list[dict], batches: BatchFn, loss_fn: LossFn, cfg: TrainConfig,
          run_dir: str | Path) -> dict[str, float]:
    """Train `model` for `cfg.steps` optimiser steps, resuming from the run's last checkpoint if any.

    `model` must have ``save(folder)``; checkpoints go to ``run_dir/checkpoints`` and one JSON line per
    logged step to ``run_dir/metrics.jsonl``. Returns the last step's metrics.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # accelerate keeps one precision per process; a process may train again with another (a benchmark's arms), so
    # that setting is cleared (the processes and their group, accelerate's PartialState, are kept)
    AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start = 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        start = load_checkpoint(ckpt, model, optimizer, scheduler)
        log.info("resumed from %s (step %d)", ckpt, start)
    wrapped, optimizer = acc.prepare(model, optimizer)
    params = [p for g in param_groups for p in g["params"]]
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():  # drop rows a killed run wrote after its last checkpoint
        rows = [r for r in metrics_path.read_text().splitlines() if r.strip()]
        metrics_path.write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] <= start))
    last: dict[str, float] = {}
    wrapped.train()
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        micros = batches(step, acc.process_index, acc.num_processes)
        totals: dict[str, float] = {}
        for i, micro in enumerate(micros):
            sync = contextlib.nullcontext() if i == len(micros) - 1 else acc.no_sync(wrapped)
            with sync, acc.autocast():
                loss, m = loss_fn(wrapped, micro)
                acc.backward(loss / len(micros))
            for k, v in {"loss": loss.item(), **m}.items():
                totals[k] = totals.get(k, 0.0) + v / len(micros)
        grad_norm = acc.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
        if not torch.isfinite(torch.as_tensor(grad_norm)):
            raise FloatingPointError(f"step {step + 1}: gradient norm is {float(grad_norm)}; lower the learning rate")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % TRIM_EVERY == 0:
            trim_heap()
        last = {"step": step + 1, **totals, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0],
                "step_s": time.perf_counter() - t0}
        if acc.is_main_process and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            log.info("step %d/%d  %s", step + 1, cfg.steps,
                     "  ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step"))
            with metrics_path.open("a") as f:
                f.write(json.dumps(last) + "\n")
        if acc.is_main_process and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(run_dir, step + 1, acc.unwrap_model(wrapped), optimizer.optimizer
                            if hasattr(optimizer, "optimizer") else optimizer, scheduler)
        acc.wait_for_everyone()
    return last
