"""The retrieval recipe end to end on tiny models, and exact resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polyvox.cli import main
from polyvox.config import load_config, save_config
from polyvox.recipes.retrieval import run_train, run_units_encode, run_units_fit

TINY = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def tiny_cfg(manifest, out, *overrides):
    return load_config(TINY, [f"data.manifest={manifest}", f"out_dir={out}", *overrides])


def test_cli_pipeline_writes_reports(tiny_corpus, tmp_path, capsys):
    args = ["--config", str(TINY), "--manifest", str(tiny_corpus), "--out", str(tmp_path / "run")]
    for cmd in (["units", "fit"], ["units", "encode"], ["train", "retrieval"], ["eval", "retrieval"]):
        assert main([*cmd, *args]) == 0
    out = capsys.readouterr().out
    assert "| pl_pl | no |" in out and "seen avg" in out
    run = tmp_path / "run"
    result = json.loads((run / "eval.json").read_text())
    assert result["languages"]["pl_pl"]["seen"] is False and result["languages"]["fr_fr"]["seen"] is True
    assert result["config"]["model"]["backbone"] == "tiny-gemma3" and "torch" in result["versions"]
    assert (run / "eval.png").stat().st_size > 1000
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    # embed: vectors for audio files and texts, comparable in one space
    audio = sorted((tiny_corpus.parent / "audio" / "fr_fr").glob("*.flac"))[:2]
    assert main(["embed", "--model", str(run / "model"), "--lang", "fr_fr", "--out", str(tmp_path / "a.npy"),
                 "--audio", *map(str, audio)]) == 0
    assert main(["embed", "--model", str(run / "model"), "--lang", "fr_fr", "--out", str(tmp_path / "t.npy"),
                 "--text", "red cat", "blue sun", "green dog"]) == 0
    import numpy as np

    a, t = np.load(tmp_path / "a.npy"), np.load(tmp_path / "t.npy")
    assert a.shape == (2, 32) and t.shape == (3, 32) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert main(["embed", "--model", str(run / "model"), "--lang", "fr_fr", "--out", str(tmp_path / "m.npy"),
                 "--manifest", str(tiny_corpus), "--split", "test"]) == 0
    ids = (tmp_path / "m.ids.txt").read_text().split()
    assert np.load(tmp_path / "m.npy").shape == (len(ids), 32) and len(ids) == 12  # 2+2 seen, 8 held-out


def test_cli_errors_are_clear(tiny_corpus, tmp_path, capsys):
    assert main(["train", "retrieval", "--config", str(TINY), "--set", "train.stepz=3"]) == 2
    assert "unknown key(s) stepz" in capsys.readouterr().err
    assert main(["embed", "--model", str(tmp_path), "--lang", "xx_xx", "--out", "x.npy", "--text", "a"]) == 2
    assert "unknown language code 'xx_xx'" in capsys.readouterr().err


def test_loss_goes_down(tiny_corpus, tmp_path):
    cfg = tiny_cfg(tiny_corpus, tmp_path / "run", "train.steps=40", "train.save_every=100")
    run_units_fit(cfg)
    run_train(cfg)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(r["contrastive"] for r in rows[:5]) / 5, sum(r["contrastive"] for r in rows[-5:]) / 5
    assert last < 0.6 * first


def test_resume_after_kill_gives_same_weights(tiny_corpus, tmp_path):
    steps = 150
    base = tiny_cfg(tiny_corpus, tmp_path / "a", f"train.steps={steps}", "train.save_every=5",
                    "loss.translation_weight=0.5")
    run_units_fit(base)
    run_units_encode(base)
    ref = load_file(str(run_train(base) / "model.safetensors"))

    # second run: same units, killed with SIGKILL mid-training, then restarted
    killed = tmp_path / "b"
    (killed / "units").mkdir(parents=True)
    for f in (tmp_path / "a" / "units").iterdir():
        (killed / "units" / f.name).write_bytes(f.read_bytes())
    cfg_b = tiny_cfg(tiny_corpus, killed, f"train.steps={steps}", "train.save_every=5", "loss.translation_weight=0.5")
    save_config(cfg_b, tmp_path / "b.yaml")
    cmd = [sys.executable, "-m", "polyvox.cli", "train", "retrieval", "--config", str(tmp_path / "b.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = killed / "checkpoints" / "last"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and int(pointer.read_text().split("-")[1]) >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    if proc.returncode == 0:
        pytest.fail("training finished before it could be killed; make the run longer")
    stopped_at = int(pointer.read_text().split("-")[1])
    assert stopped_at < steps
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    got = load_file(str(killed / "model" / "model.safetensors"))
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-6), k
    rows = [json.loads(r) for r in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))


def test_demo_command_end_to_end_on_tiny_preset(tmp_path, capsys):
    """`polyvox demo` builds the (tiny) TTS corpus itself, then units, training and evaluation."""
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    assert main(["demo", "--config", str(TINY), "--corpus-dir", str(corpus), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "polyvox demo" in out and "unseen avg" in out
    result = json.loads((run / "eval.json").read_text())
    seen = {lang for lang, r in result["languages"].items() if r["seen"]}
    assert seen and seen != set(result["languages"])  # both seen and held-out languages are evaluated
    assert (corpus / "manifest.jsonl").exists() and (run / "model" / "units.json").exists()


def test_lora_with_grad_accumulation_trains_adapters_only(tiny_corpus, tmp_path):
    from polyvox.models.dual_encoder import DualEncoder

    cfg = tiny_cfg(tiny_corpus, tmp_path / "run", "model.lora_rank=4", "train.grad_accum=2", "train.steps=4")
    run_units_fit(cfg)
    folder = run_train(cfg)
    saved = load_file(str(folder / "model.safetensors"))
    assert any("lora_A" in k for k in saved) and "audio_embed" in saved
    # frozen base weights are not in the checkpoint: it holds adapters, audio rows, projection, scale
    assert not any(k.endswith("q_proj.base_layer.weight") or k.endswith("mlp.up_proj.weight") for k in saved)
    model = DualEncoder.load(folder)
    assert torch.equal(model.audio_embed.detach(), saved["audio_embed"])
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["grad_norm"] > 0 for r in rows)


def test_batches_are_one_language_and_cover_the_epoch(tmp_path):
    import numpy as np

    from polyvox.models.units import UnitSpec, UnitTokenizer
    from polyvox.recipes.retrieval import _batches, build_model

    cfg = tiny_cfg(tmp_path / "m.jsonl", tmp_path / "run", "train.batch_size=4")
    spec = UnitSpec("tiny-whisper", "x", 2, 2, False, False, 16)
    model = build_model(cfg, UnitTokenizer(np.zeros((16, 4)), spec))
    train_set = [([1, 2, 3], lang, f"{lang} sentence {i}") for lang in ("fr_fr", "de_de") for i in range(8)]
    batches = _batches(cfg, model, train_set, [])
    seen = []
    for step in range(4):  # 16 items / 4 per batch = one epoch
        text = batches(step, 0, 1)[0]["text"]
        prefixes = {model.tokenizer.decode(ids, skip_special_tokens=True) for ids in text.prefix}
        texts = [model.tokenizer.decode(ids, skip_special_tokens=True) for ids in text.content]
        assert len({t.split()[0] for t in texts}) == 1 and len(prefixes) == 1, texts
        seen += texts
    assert sorted(seen) == sorted(s[2] for s in train_set)
    assert batches(1, 0, 1) == batches(1, 0, 1)  # a pure function of the step: resumable
