"""The GPU configs (configs/*-base.yaml) dry-run on CPU: each loads, builds its models with the same options on the
tiny presets (bf16 mixed precision, LoRA, layer mix, CTC stage, translation pairs …) and trains one step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from polyvox.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
SMALL = ["train.steps=1", "train.batch_size=4", "train.save_every=1", "train.warmup_steps=1", "train.log_every=1"]
RUNS = {  # config -> (commands, the overrides that swap in tiny presets and small sizes; every other option kept)
    "base.yaml": ([["units", "fit"], ["units", "encode"], ["train", "retrieval"]],
                  ["units.encoder=tiny-whisper", "units.layer=2", "units.num_units=16", "units.batch_size=8",
                   "model.backbone=tiny-gemma3", "model.proj_dim=32", "loss.translation_batch_size=4"]),
    "blsp-base.yaml": ([["data", "continuations"], ["train", "blsp"]],
                       ["model.encoder=tiny-whisper", "model.llm=tiny-gemma3", "continuation.max_new_tokens=4",
                        "continuation.batch_size=8", "loss.max_target_tokens=4"]),
    "mit-base.yaml": ([["train", "mit"]],
                      ["model.encoder=tiny-whisper", "model.llm=tiny-gemma3", "targets.max_new_tokens=4",
                       "targets.batch_size=8", "ctc.steps=1", "ctc.batch_size=4", "loss.max_target_tokens=4"]),
}


@pytest.mark.parametrize("config", sorted(RUNS))
def test_gpu_config_dry_run(config: str, tiny_corpus: Path, tmp_path: Path) -> None:
    commands, tiny = RUNS[config]
    run = tmp_path / "run"
    args = ["--config", str(CONFIGS / config), "--manifest", str(tiny_corpus), "--out", str(run)]
    for cmd in commands:
        assert main([*cmd, *args, *[x for o in [*tiny, *SMALL] for x in ("--set", o)]]) == 0, cmd
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["loss"])
    assert (run / "model" / "model.safetensors").exists()
