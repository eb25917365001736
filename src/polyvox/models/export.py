"""Exported models: the trainable tensors (safetensors) + a JSON description; frozen parts are referenced by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from polyvox.fileio import atomic_write, atomic_write_text, read_safetensors


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries of parameters that require gradients, plus every entry under the prefixes a model
    lists in ``exported_state`` (running statistics, parameters set without gradients); CPU, contiguous."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    prefixes = tuple(getattr(model, "exported_state", ()))
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
            if k in names or (prefixes and k.startswith(prefixes))}


def save_trainable(model: nn.Module, folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (trainable tensors) and ``model.json`` (`meta`) atomically into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda p: save_file(trainable_state(model), p))
    atomic_write_text(folder / "model.json", json.dumps(meta, indent=2))
    return folder


CHECKPOINT_KINDS = {"dual_encoder": "dual encoder", "speech_llm": "speech LLM", "ctc_stage": "CTC stage"}
"""The ``kind`` an exported ``model.json`` records -> its name in messages."""


def read_meta(folder: str | Path, kind: str) -> dict[str, Any]:
    """``model.json`` of an exported model of `kind` (a key of `CHECKPOINT_KINDS`); FileNotFoundError without one,
    ValueError for another kind. A file without ``kind`` is a dual encoder (exports before it was recorded)."""
    path = Path(folder) / "model.json"
    if not path.exists():
        raise FileNotFoundError(f"no {CHECKPOINT_KINDS[kind]} checkpoint in {folder} (model.json missing)")
    meta = json.loads(path.read_text())
    found = meta.get("kind", "dual_encoder")
    if found != kind:
        raise ValueError(f"{folder} holds a {CHECKPOINT_KINDS.get(found, found)} checkpoint, not a "
                         f"{CHECKPOINT_KINDS[kind]}")
    return meta


def load_trainable(model: nn.Module, folder: str | Path) -> None:
    """Load ``model.safetensors`` into `model`, refusing a file that lacks any of its trainable tensors."""
    weights = read_safetensors(Path(folder) / "model.safetensors", "torch")
    missing = set(trainable_state(model)) - set(weights)
    if missing:
        raise ValueError(f"{folder}: checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[:3]}")
    model.load_state_dict(weights, strict=False)
