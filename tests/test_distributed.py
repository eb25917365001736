"""Multi-process training on CPU (gloo): N processes holding B/N pairs each train exactly as one process holding B.

The two-process runs use the README's command, ``accelerate launch --multi_gpu --num_processes 2 -m polyvox.cli
train ...``: without CUDA, accelerate runs it on CPU processes over gloo.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from polyvox.cli import main

ROOT = Path(__file__).parents[1]
TINY, BLSP_TINY = ROOT / "configs" / "tiny.yaml", ROOT / "configs" / "blsp-tiny.yaml"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(args: list[str], processes: int) -> None:
    """`polyvox <args>` in one process, or under `accelerate launch` in `processes`."""
    launcher = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
                str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_port()), "-m", "polyvox.cli"]
    cmd = [sys.executable, "-m", "polyvox.cli"] if processes == 1 else launcher
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def _weights(run: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted((run / "model").glob("*.safetensors")):
        out |= {f"{f.name}:{k}": v for k, v in load_file(f).items()}
    assert out
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r.strip()]


def _assert_same_training(one: Path, two: Path, compare: tuple[str, ...]) -> None:
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=2e-5, err_msg=k)
    ra, rb = _metrics(one), _metrics(two)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] and all(r["grad_norm"] > 0 for r in ra)  # it trained
    for x, y in zip(ra, rb):
        for key in compare:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), (key, x["step"])


def test_gathered_losses_equal_one_process_holding_the_whole_batch(tiny_corpus: Path, tmp_path: Path) -> None:
    """Retrieval (contrastive with gathered negatives, spread-out, translation and speech-translation terms); the
    processes hold 3 and 2 pairs."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--config", str(TINY), "--manifest", str(tiny_corpus), "--out", str(one)]
    for cmd in (["units", "fit"], ["units", "encode"]):
        assert main([*cmd, *args]) == 0
    shutil.copytree(one, two)
    steps = ["--set", "train.steps=3", "--set", "train.batch_size=5", "--set", "loss.translation_weight=0.5", "--set",
             "loss.speech_translation_weight=0.5", "--set", "loss.translation_batch_size=4"]
    _train(["train", "retrieval", *args, *steps], 1)
    _train(["train", "retrieval", *args[:-1], str(two), *steps], 2)
    _assert_same_training(one, two, ("loss", "contrastive", "translation", "speech_translation", "grad_norm"))


def test_speech_llm_training_equals_one_process(tiny_corpus: Path, tmp_path: Path) -> None:
    """BLSP: the token-level cross-entropy is a mean over every process's target tokens."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--config", str(BLSP_TINY), "--manifest", str(tiny_corpus), "--out", str(one)]
    assert main(["data", "continuations", *args]) == 0
    shutil.copytree(one, two)
    steps = ["--set", "train.steps=3", "--set", "train.batch_size=3"]  # processes hold 2 and 1 clips
    _train(["train", "blsp", *args, *steps], 1)
    _train(["train", "blsp", *args[:-1], str(two), *steps], 2)
    _assert_same_training(one, two, ("grad_norm",))
