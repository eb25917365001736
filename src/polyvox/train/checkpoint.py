"""Resumable checkpoints: the model's own files + optimiser, scheduler and RNG state, all safetensors + JSON.

A checkpoint folder is written under a temporary name and renamed into place, and the `last` pointer file
is replaced atomically, so a run killed at any moment resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from polyvox.fileio import atomic_write, atomic_write_text, read_safetensors, temp_dir


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: str | Path, step: int, model, optimizer, scheduler, keep: int = 2) -> Path:
    """Save `model.save(folder)` plus trainer state as ``run_dir/checkpoints/step-XXXXXXX``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = temp_dir(root)
    model.save(tmp)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    opt_tensors["rng.torch"] = torch.get_rng_state()
    atomic_write(tmp / "trainer.safetensors", lambda f: save_file(opt_tensors, f))  # safetensors writes 0600
    meta = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    (tmp / "trainer.json").write_text(json.dumps(meta))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "last", final.name)
    older = sorted(p for p in root.glob("step-*") if p != final)
    for old in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = Path(run_dir) / "checkpoints" / "last"
    if not pointer.exists():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if (folder / "trainer.json").exists() else None


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer, scheduler) -> int:
    """Restore trainable weights, optimiser, scheduler and RNG from a checkpoint; returns its step."""
    folder = Path(folder)
    weights = read_safetensors(folder / "model.safetensors", "torch")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = trainable - set(weights)
    if missing:
        raise ValueError(f"{folder}: checkpoint lacks trainable tensors {sorted(missing)[:3]} — a different model?")
    model.load_state_dict(weights, strict=False)
    meta = json.loads((folder / "trainer.json").read_text())
    tensors = read_safetensors(folder / "trainer.safetensors", "torch")
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    return int(meta["step"])
