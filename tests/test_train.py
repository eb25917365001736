"""The retrieval recipe end to end on tiny models, and exact resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from polyvox.cli import main
from polyvox.config import BLSPConfig, load_config, save_config
from polyvox.recipes.retrieval import run_train, run_units_encode, run_units_fit

CONFIGS = Path(__file__).parents[1] / "configs"
TINY = CONFIGS / "tiny.yaml"


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
    assert json.loads((run / "model" / "model.json").read_text())["kind"] == "dual_encoder"
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
    assert main(["embed", "--model", str(tmp_path), "--out", "x.npy", "--text", "a"]) == 2
    assert "--audio and --text need their language (--lang)" in capsys.readouterr().err
    assert main(["demo", "--config", str(TINY), "--corpus-dir", str(tmp_path), "--manifest", str(tiny_corpus)]) == 2
    assert "not both" in capsys.readouterr().err
    blsp = CONFIGS / "blsp-tiny.yaml"
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text(blsp.read_text().replace("recipe: blsp", ""))
    assert main(["eval", "generate", "--config", str(unnamed)]) == 2
    assert "say which recipe it is for" in capsys.readouterr().err
    assert main(["eval", "generate", "--config", str(blsp), "--recipe", "mit"]) == 2
    assert "blsp-tiny.yaml is a blsp config (its recipe: field), not --recipe mit" in capsys.readouterr().err
    with pytest.raises(ValueError, match="recipe: this is a blsp config, not 'mit'"):
        load_config(blsp, ["recipe=mit"], BLSPConfig)


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
    peaks = dict(kv.split() for kv in out.split("peak memory per stage (MiB): ")[1].splitlines()[0].split(", "))
    assert list(peaks) == ["units_fit", "units_encode", "train", "eval"] and all(float(v) > 50 for v in peaks.values())
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
    from polyvox.models.units import UnitSpec, UnitTokenizer
    from polyvox.recipes.retrieval import _batches, build_model

    cfg = tiny_cfg(tmp_path / "m.jsonl", tmp_path / "run", "train.batch_size=4")
    spec = UnitSpec("tiny-whisper", "x", 2, 2, False, False, 16)
    model = build_model(cfg, UnitTokenizer(np.zeros((16, 4)), spec))
    train_set = [([1, 2, 3], lang, f"{lang} sentence {i}", None) for lang in ("fr_fr", "de_de") for i in range(8)]
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


def test_features_pipeline_probe_and_eval_on_another_manifest(tiny_corpus, tmp_path, capsys):
    """units.kind=features end to end through the CLI; `units probe`; and `eval retrieval --checkpoint` on a
    manifest of another run folder, using the checkpoint's own tokenizer (no units/ folder there)."""
    args = ["--config", str(TINY), "--manifest", str(tiny_corpus), "--out", str(tmp_path / "run"),
            "--set", "units.kind=features", "--set", "model.pooling=content", "--set", "model.standardize=true",
            "--set", "model.spelling_buckets=256", "--set", "model.adapter_hidden=16",
            # the demo's direct paths: a closed-form start, concatenated beside the LLM path
            "--set", "model.text_ngram_buckets=512", "--set", "model.speech_direct=frames",
            "--set", "model.closed_form_init=10", "--set", "model.direct_weight=0.9", "--set", "model.direct_dim=24"]
    for cmd in (["units", "fit"], ["units", "encode"], ["units", "probe"], ["train", "retrieval"]):
        assert main([*cmd, *args]) == 0
    out = capsys.readouterr().out
    assert "linear probe" in out and (tmp_path / "run" / "probe.json").exists()
    assert not list((tmp_path / "run" / "cache").glob("units-*.jsonl"))  # features, not unit ids
    other = tmp_path / "other"
    assert main(["eval", "retrieval", "--config", str(TINY), "--manifest", str(tiny_corpus), "--out", str(other),
                 "--checkpoint", str(tmp_path / "run" / "model")]) == 0
    result = json.loads((other / "eval.json").read_text())
    assert result["languages"]["pl_pl"]["n"] == 8 and len(result["hits"]["pl_pl"]["R@1"]) == 8
    # the index and speech search serve a continuous-input model like a unit model
    from polyvox.audio import load_audio
    from polyvox.index import embed_items, embed_speech, read_texts
    from polyvox.models.dual_encoder import DualEncoder

    model, idx = tmp_path / "run" / "model", tmp_path / "idx"
    assert main(["index", "build", "--model", str(model), "--texts", str(tiny_corpus), "--out", str(idx)]) == 0
    clip = sorted((tiny_corpus.parent / "audio" / "fr_fr").glob("*.flac"))[0]
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--lang", "fr_fr", "--audio", str(clip), "-k", "3"]) == 0
    printed = [line.split("\t")[3] for line in capsys.readouterr().out.strip().splitlines()]
    dual = DualEncoder.load(model).eval()
    items = read_texts(tiny_corpus)
    texts = embed_items(dual, items)
    assert texts.shape == (len(items), dual.cfg.proj_dim + 24) and dual.text_ngrams.idf.ne(1).any()
    scores = texts @ embed_speech(dual, [load_audio(clip)], "fr_fr")[0]
    assert printed == [items[i].id for i in np.argsort(-scores, kind="stable")[:3]]


def test_param_groups_leave_vectors_rows_and_temperature_undecayed(tmp_path):
    from polyvox.recipes.retrieval import build_model, param_groups

    cfg = tiny_cfg(tmp_path / "m.jsonl", tmp_path / "run", "train.weight_decay=0.1", "model.spelling_buckets=64")
    from polyvox.models.units import UnitSpec, UnitTokenizer

    model = build_model(cfg, UnitTokenizer(np.zeros((16, 4)), UnitSpec("tiny-whisper", "x", 2, 2, False, False, 16)))
    groups = param_groups(model, cfg.train)
    name = {id(p): n for n, p in model.named_parameters()}
    decayed = {name[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {name[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "audio_embed" in plain and "log_scale" in plain and "proj.bias" in plain and "proj.weight" in decayed
    assert not any(n.endswith(("norm.weight", "bias")) for n in decayed)
    lrs = {name[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert lrs["proj.weight"] == lrs["spelling.table.weight"] == cfg.train.new_params_lr
    assert {lr for n, lr in lrs.items() if n.startswith("backbone.")} == {cfg.train.lr}
    assert len(lrs) == sum(p.requires_grad for p in model.parameters())
    cfg.train.decay_all = True  # the ablation: every parameter decays, learning rates unchanged
    groups = param_groups(model, cfg.train)
    assert all(g["weight_decay"] == 0.1 for g in groups)
    assert {name[id(p)]: g["lr"] for g in groups for p in g["params"]} == lrs


def test_float_overrides_in_exponent_form(tmp_path):
    """YAML 1.1 reads 1e-5 (no dot) as a string: a float field still takes it, and a word is still refused."""
    assert tiny_cfg("m.jsonl", tmp_path, "train.lr=1e-5").train.lr == 1e-5
    with pytest.raises(ValueError, match="train.lr: expected float, got 'fast'"):
        tiny_cfg("m.jsonl", tmp_path, "train.lr=fast")


def test_param_groups_after_a_closed_form_start(tmp_path):
    """The parameters `closed_form_init` sets train at `closed_form_lr`, or not at all when it is 0."""
    from polyvox.models.units import UnitSpec, UnitTokenizer
    from polyvox.recipes.retrieval import build_model, param_groups

    tok = UnitTokenizer(np.zeros((16, 4)), UnitSpec("tiny-whisper", "x", 2, 2, False, False, 16))
    for lr in (0.0, 1e-5):
        cfg = tiny_cfg(tmp_path / "m.jsonl", tmp_path / "run", "model.text_ngram_buckets=64",
                       "model.speech_direct=inputs", "model.closed_form_init=10", f"train.closed_form_lr={lr}")
        model = build_model(cfg, tok)
        groups = param_groups(model, cfg.train)
        name = {id(p): n for n, p in model.named_parameters()}
        lrs = {name[id(p)]: g["lr"] for g in groups for p in g["params"]}
        direct = {n for n in name.values() if n.startswith(("text_ngrams.", "speech_direct."))}
        assert {lrs.get(n) for n in direct} == ({None} if lr == 0 else {lr})
        assert all(model.get_parameter(n).requires_grad == (lr > 0) for n in direct)
        assert lrs["proj.weight"] == cfg.train.new_params_lr


def test_augmented_copies_replace_their_original_within_an_epoch(tiny_corpus, tmp_path):
    """train.augment writes degraded copies once and trains on them; each epoch holds one version of every
    clip, so a batch never pairs a clip's text with two recordings."""
    from polyvox.models.units import UnitSpec, UnitTokenizer
    from polyvox.recipes.retrieval import _batches, build_model

    cfg = tiny_cfg(tiny_corpus, tmp_path / "run", "train.batch_size=4", "train.steps=3", "train.augment=[telephone]")
    spec = UnitSpec("tiny-whisper", "x", 2, 2, False, False, 16)
    model = build_model(cfg, UnitTokenizer(np.zeros((16, 4)), spec))
    train_set = [([1, 2, 3], "fr_fr", f"sentence {i}", None) for i in range(8)] + [([4, 5], "fr_fr", f"sentence {i}", None)
                                                                                  for i in range(8)]
    batches = _batches(cfg, model, train_set, [], {i: [8 + i] for i in range(8)})
    kinds = set()
    for epoch in range(3):
        texts = []
        for step in range(2 * epoch, 2 * epoch + 2):  # 8 items / 4 per batch
            b = batches(step, 0, 1)[0]
            texts += [model.tokenizer.decode(ids, skip_special_tokens=True) for ids in b["text"].content]
            kinds |= {len(c) for c in b["speech"].content}
        assert sorted(texts) == sorted(f"sentence {i}" for i in range(8))  # each text once per epoch
    assert kinds == {2, 3}  # originals (3 units) and copies (2 units) are both drawn
    run_units_fit(cfg)
    run_train(cfg)
    copies = list((tmp_path / "run" / "augmented" / "telephone").rglob("*.flac"))
    from polyvox.data.manifest import read_manifest

    assert len(copies) == len(read_manifest(tiny_corpus, split="train"))


def test_speech_translation_loss_pairs_each_clip_with_its_own_translation(tmp_path):
    """loss.speech_translation_weight: clips with a pivot-language translation are contrasted with it (in-batch
    negatives), clips without one are left out, and the term is the contrastive loss computed by hand."""
    from polyvox.losses import contrastive_loss
    from polyvox.models.units import UnitSpec, UnitTokenizer
    from polyvox.recipes.retrieval import _batches, _loss_fn, build_model

    cfg = tiny_cfg(tmp_path / "m.jsonl", tmp_path / "run", "train.batch_size=8", "loss.speech_translation_weight=0.5")
    model = build_model(cfg, UnitTokenizer(np.zeros((16, 4)), UnitSpec("tiny-whisper", "x", 2, 2, False, False, 16)))
    train_set = [([1 + i % 5, 2, 3 + i % 7], "fr_fr", f"phrase {i}", f"sentence {i}" if i % 3 else None)
                 for i in range(8)]
    batch = _batches(cfg, model, train_set, [])(0, 0, 1)[0]
    texts = [model.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["text"].content]
    english = [model.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["xl"].content]
    assert english == [t.replace("phrase", "sentence") for t in texts if int(t.split()[1]) % 3]
    assert [texts[j] for j in batch["xl_index"]] == [t for t in texts if int(t.split()[1]) % 3]
    model.eval()
    with torch.no_grad():
        loss, m = _loss_fn(cfg)(model, batch)
        speech = model(batch["speech"])[0][batch["xl_index"]]
        scale = model.log_scale.exp()
        expected = contrastive_loss(speech, model.encode_text(english, cfg.data.pivot_lang), scale)
    assert m["speech_translation"] == pytest.approx(float(expected), rel=1e-5)
    assert float(loss) == pytest.approx(m["contrastive"] + cfg.loss.spread_out * m["spread_out"]
                                        + 0.5 * m["speech_translation"], rel=1e-5)


def test_augment_fraction_copies_a_seeded_share_of_the_clips(tiny_corpus, tmp_path):
    """train.augment_fraction: only that share of the training clips gets a copy (written and encoded), the
    same share for the same seed; each copy is paired with its own original; out of range is refused."""
    from polyvox.models.units import load_speech_tokenizer
    from polyvox.recipes.retrieval import _manifest, training_set, units_dir

    cfg = tiny_cfg(tiny_corpus, tmp_path / "run", "train.augment=[mixed]", "train.augment_fraction=0.5")
    run_units_fit(cfg)
    units, _ = run_units_encode(cfg, cfg.data.train_split)
    tok = load_speech_tokenizer(units_dir(cfg))
    usable = [u for u in _manifest(cfg, cfg.data.train_split)[0] if u.id in units]
    train_set, versions = training_set(cfg, usable, units, tok)
    n = len(usable)
    assert len(train_set) == n + round(n / 2) and len(versions) == round(n / 2)
    for i, (j,) in versions.items():
        assert train_set[j][1:] == train_set[i][1:] and j >= n  # the copy carries its original's text
    assert len(list((tmp_path / "run" / "augmented" / "mixed").rglob("*.flac"))) == round(n / 2)
    assert training_set(cfg, usable, units, tok)[1] == versions
    cfg.train.augment_fraction = 0.0
    with pytest.raises(ValueError, match="augment_fraction"):
        training_set(cfg, usable, units, tok)
