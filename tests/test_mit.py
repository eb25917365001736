"""The mit recipe on tiny random models: instruction draws, LLM targets and their cache, the CTC stage over the
frozen embedding table, layer mix and LoRA, learning on the TMI mix, held-out evaluation and the CLI."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import char_speech, content_sensitive, tone_speech

from polyvox.cli import main
from polyvox.config import MITConfig, SpeechLLMConfig, load_config
from polyvox.eval.systems import SpeechLLMSystem
from polyvox.eval.tasks import build_tasks
from polyvox.models.ctc import EmbeddingCTCHead
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm, make_instruction
from polyvox.recipes import mit, speech_llm
from polyvox.recipes.speech_llm import alignment_loss, untrained_like

MIT_TINY = Path(__file__).parents[1] / "configs" / "mit-tiny.yaml"
TEXTS = ["red cat", "blue dog", "sun moon", "tree fish", "bird stone", "green river", "cat sun", "dog tree"]


def mit_cfg(manifest: Path, out: Path, *overrides: str) -> MITConfig:
    return load_config(MIT_TINY, [f"data.manifest={manifest}", f"out_dir={out}", *overrides], MITConfig)


def metric_rows(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def tiny_model(**model: object) -> SpeechLLM:
    cfg = SpeechLLMConfig(**{"encoder": "tiny-whisper", "llm": "tiny-gemma3", "adapter_hidden": 64, **model})
    return build_speech_llm(cfg).eval()


# -- instructions and targets ----------------------------------------------------------------------------------
def test_variants_draw_each_kind_alike(tiny_corpus: Path, tmp_path: Path) -> None:
    cfgs = {v: mit_cfg(tiny_corpus, tmp_path, f"targets.variant={v}", "targets.per_kind=2") for v in ("T", "MI", "TMI")}
    bank = mit.bank_of(cfgs["TMI"])
    utts = mit.train_utterances(cfgs["TMI"])
    drawn = {v: mit.draw(cfg, bank, utts) for v, cfg in cfgs.items()}
    assert len(drawn["T"]) == len(drawn["MI"]) == 2 * len(utts) and len(drawn["TMI"]) == 4 * len(utts)
    assert {i.kind for _, i in drawn["T"]} == {"T"} and {i.kind for _, i in drawn["MI"]} == {"MI"}
    # a TMI run asks exactly the T run's and the MI run's instructions, so the variants share their answers
    assert sorted((u.id, i.template_id, i.prefix, i.postfix) for u, i in drawn["TMI"]) == sorted(
        (u.id, i.template_id, i.prefix, i.postfix) for u, i in drawn["T"] + drawn["MI"])
    assert all(bank[i.template_id].split == "train" for _, i in drawn["TMI"])
    assert mit.draw(cfgs["TMI"], bank, utts) == drawn["TMI"]  # deterministic
    with pytest.raises(ValueError, match="targets.variant must be one of T, MI, TMI, got 'X'"):
        mit.draw(mit_cfg(tiny_corpus, tmp_path, "targets.variant=X"), bank, utts)


def test_targets_come_from_the_llm_are_cached_and_shared(tiny_corpus: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "shared.jsonl"
    cfg = mit_cfg(tiny_corpus, tmp_path / "tmi", f"targets.cache={cache}")
    model = build_speech_llm(cfg.model)
    examples = mit.run_targets(cfg, model)
    utts = mit.train_utterances(cfg)
    summary = json.loads((tmp_path / "tmi" / "targets.json").read_text())
    assert summary["utterances"] == len(utts) == 12 and summary["drawn"] == 24
    assert summary["llm"]["requests"] == 12 and summary["llm"]["generated"] == 12  # T targets need no LLM
    assert summary["examples"] == len(examples) == 12 + summary["llm"]["usable"]
    for e in examples:
        if e.instruction.kind == "T":
            assert e.target == e.utt.text
        else:  # the frozen LLM's own answer from the transcript, under the same prefix/postfix
            pair = (e.instruction.prefix, e.instruction.postfix)
            assert model.generate_text([e.utt.text], pair, max_new_tokens=12, stop_at_newline=True) == [e.target]
    rows = [json.loads(r) for r in cache.read_text().splitlines()]
    assert len(rows) == 12 and {r["template"] for r in rows} <= {e.instruction.template_id for e in examples}

    # an MI run sharing the cache builds no model: its instructions are the TMI run's MI ones
    def no_model(*args: object) -> None:
        raise AssertionError("the LLM was built although every target is cached")

    monkeypatch.setattr(mit, "build_speech_llm", no_model)
    mi = mit.run_targets(mit_cfg(tiny_corpus, tmp_path / "mi", f"targets.cache={cache}", "targets.variant=MI"))
    assert sorted((e.utt.id, e.target) for e in mi) == sorted(
        (e.utt.id, e.target) for e in examples if e.instruction.kind == "MI")
    monkeypatch.undo()

    # repeat targets from the LLM instead of the transcript: every instruction goes to the LLM
    mit.run_targets(mit_cfg(tiny_corpus, tmp_path / "llm", f"targets.cache={cache}", "targets.repeat_target=llm"), model)
    llm = json.loads((tmp_path / "llm" / "targets.json").read_text())["llm"]
    assert llm["requests"] == 24 and llm["cached"] == 12 and llm["generated"] == 12
    with pytest.raises(ValueError, match="targets.repeat_target must be one of transcript, llm"):
        mit.run_targets(mit_cfg(tiny_corpus, tmp_path / "x", "targets.repeat_target=gold"), model)


# -- model options ------------------------------------------------------------------------------------------------
def test_layer_mix_and_lora_train_only_what_they_should() -> None:
    plain = tiny_model()
    model = tiny_model(layer_mix=True, lora_rank=4)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "layer_mix.logits" in names and any(".lora_B." in n for n in names)
    assert all(n.startswith(("adapter.", "layer_mix.")) or ".lora_" in n for n in names)
    assert model.layer_mix.logits.shape == (model.encoder.layer + 1,)

    wavs = [tone_speech("red cat"), tone_speech("blue dog sun moon", 1)]
    prompts = [("A text: ", " Again:")] * 2
    targets = [[5, 6, 7], [8, 9]]
    with torch.no_grad():  # LoRA's B starts at zero: the LLM is unchanged until it trains
        a, _, _ = model.forward(wavs, prompts, targets)
        model.layer_mix = None  # the last layer alone and no mix
        b, _, _ = model.forward(wavs, prompts, targets)
        c, _, _ = plain.forward(wavs, prompts, targets)
    assert torch.allclose(b, c, atol=1e-5) and not torch.allclose(a, c, atol=1e-3)

    model = tiny_model(layer_mix=True, lora_rank=4).train()
    logits, ids, _ = model(wavs, prompts, targets)
    torch.nn.functional.cross_entropy(logits, ids).backward()
    assert model.layer_mix.logits.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)
    assert all(p.grad is None for n, p in model.lm.named_parameters() if ".lora_" not in n)
    # a clip's frames do not depend on its batch partners, with the mix as without
    with torch.no_grad():
        batch, n = model.speech_frames(wavs)
        alone, k = model.speech_frames(wavs[:1])
    assert torch.allclose(batch[0, : int(k[0])], alone[0, : int(k[0])], atol=1e-5)
    with pytest.raises(ValueError, match="match no module"):
        tiny_model(lora_rank=2, lora_targets=["no_such_proj"])


def test_lora_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny_model(layer_mix=True, lora_rank=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    loaded = SpeechLLM.load(model.save(tmp_path / "m"))
    a, b = model.trainable_state(), loaded.trainable_state()
    assert set(a) == set(b) and any(".lora_A." in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)

    # the untrained baseline must not reset the trained LoRA of the LLM it would share
    with pytest.raises(ValueError, match="already carries LoRA layers"):
        SpeechLLM(loaded.encoder, loaded.lm, loaded.tokenizer, loaded.cfg)
    fresh = untrained_like(loaded)
    assert fresh.lm is not loaded.lm and all(torch.equal(v, loaded.trainable_state()[k]) for k, v in a.items())
    assert all(not p.abs().sum() for n, p in fresh.lm.named_parameters() if ".lora_B." in n)
    assert untrained_like(tiny_model()).lm is not None


# -- the CTC stage ----------------------------------------------------------------------------------------------
def test_ctc_stage_trains_the_adapter_side_over_the_frozen_table(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = mit_cfg(tiny_corpus, tmp_path / "run", "ctc.steps=4", "train.steps=0")
    model = build_speech_llm(cfg.model)
    table = model.lm.get_input_embeddings().weight
    before, adapter_before = table.detach().clone(), copy.deepcopy(model.adapter.state_dict())
    stage = speech_llm.CTCStage(model, EmbeddingCTCHead(model.lm.get_input_embeddings()))
    assert stage.head.embedding.weight is table and not table.requires_grad
    assert {id(p) for p in stage.trainable()}.isdisjoint({id(p) for p in model.lm.parameters()})
    heads = []
    real_init = speech_llm.CTCStage.__init__
    with pytest.MonkeyPatch.context() as mp:  # which classes the recipe's stage scores
        mp.setattr(speech_llm.CTCStage, "__init__", lambda self, *a: real_init(self, *a) or heads.append(self.head))
        folder = mit.run_train(cfg)
    said = {k for u in mit.train_utterances(cfg) for k in model.text_ids(u.text)}
    assert heads[0].token_ids.tolist() == sorted(said) and len(said) < table.shape[0]  # the transcripts' tokens
    rows = metric_rows(tmp_path / "run" / "ctc")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["ctc"] > 0 and r["ctc_items"] > 0 for r in rows)
    trained = SpeechLLM.load(folder)
    assert torch.equal(trained.lm.get_input_embeddings().weight, before)  # the table never moved
    assert any(not torch.equal(trained.adapter.state_dict()[k], v) for k, v in adapter_before.items())
    # with no cross-entropy steps the exported model is exactly the CTC stage's
    ctc = SpeechLLM.load(tmp_path / "run" / "ctc" / "model").trainable_state()
    assert all(torch.equal(v, trained.trainable_state()[k]) for k, v in ctc.items())


# -- learning -------------------------------------------------------------------------------------------------------
def test_training_on_the_tmi_mix_lowers_the_loss_of_both_kinds() -> None:
    """A tiny LLM is taught two tasks from text (repeat; say the words in reverse), frozen; then the mit loss on
    a TMI mix of both over speech trains the adapter until the LLM does both from the speech."""
    torch.manual_seed(0)
    base = tiny_model(adapter_hidden=128)
    content_sensitive(base)
    eos = base.tokenizer.eos_token_id
    pairs = {"T": ("Say: ", " Again:"), "MI": ("Say: ", " Reversed:")}
    answers = {"T": lambda t: t, "MI": lambda t: " ".join(reversed(t.split()))}
    rows = [(t, k) for t in TEXTS for k in pairs]
    targets = [base.text_ids(answers[k](t)) + [eos] for t, k in rows]
    lm = base.lm.requires_grad_(True).train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(100):
        logits, ids = base.target_logits(*base.assemble(base.text_rows([t for t, _ in rows],
                                                                        [pairs[k] for _, k in rows]), targets))
        loss = F.cross_entropy(logits, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.requires_grad_(False).eval()
    assert base.generate_text([t for t, _ in rows], [pairs[k] for _, k in rows], max_new_tokens=12) == [
        answers[k](t) for t, k in rows]  # the premise: the LLM does both tasks from text

    model = SpeechLLM(base.encoder, base.lm, base.tokenizer, base.cfg, seed=0).train()
    batch = {"wavs": [char_speech(t, i) for i, (t, _) in enumerate(rows)], "utts": [None] * len(rows),
             "items": [(pairs[k], tgt, k) for (_, k), tgt in zip(rows, targets)]}
    loss_fn = alignment_loss(MITConfig().loss)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(250):
        loss, m = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(m)
    for kind in pairs:
        first, last = history[0][f"ce_{kind}"], np.mean([m[f"ce_{kind}"] for m in history[-10:]])
        assert first > 1.0 and last < 0.1, (kind, first, last)
    model.eval()
    for k, pair in pairs.items():  # exact answers from speech; on some CPUs one clip of six ends a word off
        said = model.generate(batch["wavs"][::2], pair, max_new_tokens=12)
        assert sum(a == answers[k](t) for a, t in zip(said, TEXTS)) >= len(TEXTS) - 1, (k, said)


def test_run_train_records_both_kinds_and_the_model_meta(tiny_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    mit.run_train(mit_cfg(tiny_corpus, run, "ctc.steps=0", "train.steps=3"))
    rows = metric_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and any("ce_T" in r and "ce_MI" in r for r in rows)
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["recipe"] == "mit" and meta["model"]["prompt_style"] == "pair" and meta["variant"] == "TMI"
    assert meta["train_languages"] == ["de_de", "fr_fr"]
    model = SpeechLLM.load(run / "model")
    assert model.cfg.prompt_style == "pair"
    # an export from before the config field recorded the style beside it: read as before, same fingerprint
    meta["prompt_style"] = meta["model"].pop("prompt_style")
    (run / "model" / "model.json").write_text(json.dumps(meta))
    older = SpeechLLM.load(run / "model")
    assert older.cfg.prompt_style == "pair" and older.fingerprint() == model.fingerprint()


# -- evaluation -----------------------------------------------------------------------------------------------------
def test_heldout_items_ask_heldout_templates_and_get_llm_references(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = mit_cfg(tiny_corpus, tmp_path / "run")
    bank = mit.bank_of(cfg)
    tasks = build_tasks(tiny_corpus, cfg.eval, "en_us", bank=bank, other_langs=cfg.targets.other_langs)
    items = tasks["heldout"]
    assert items and all(bank[it.template].split == "heldout" for it in items)
    assert all(it.instruction == it.pair for it in items)  # every system is asked the same raw pair
    assert [it.template for it in items] == [it.template for it in build_tasks(
        tiny_corpus, cfg.eval, "en_us", bank=bank, other_langs=cfg.targets.other_langs)["heldout"]]
    model = build_speech_llm(cfg.model)
    mit.fill_heldout_references(cfg, model, tasks)
    for it in tasks["heldout"]:
        if it.kind == "T":
            assert it.reference == it.text
        else:
            assert it.reference == model.generate_text([it.text], it.pair, max_new_tokens=12, stop_at_newline=True)[0]
    with pytest.raises(ValueError, match="heldout task needs an instruction template bank"):
        build_tasks(tiny_corpus, cfg.eval, "en_us")


def test_joint_decoder_transcribes_and_the_llm_answers_heldout_instructions_from_it(
        tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    cfg = mit_cfg(tiny_corpus, run, "model.ctc_readout=soft", "ctc.steps=1", "train.steps=1", "eval.baselines=[]",
                  "eval.tasks=[asr,heldout]", "eval.joint_ctc_weight=0.5", "eval.joint_beam=2", "eval.joint_cascade=true")
    mit.run_train(cfg)
    decoded = []  # every clip the joint search decodes
    search = SpeechLLM.transcribe_joint
    monkeypatch.setattr(SpeechLLM, "transcribe_joint", lambda self, clips, *a, **k: decoded.extend(clips) or
                        search(self, clips, *a, **k))
    tasks = mit.run_eval(cfg)["tasks"]
    monkeypatch.undo()
    assert set(tasks["asr"]["systems"]) == {"mit", "mit [ctc+llm]"}
    assert set(tasks["heldout"]["systems"]) == {"mit", "mit [ctc+llm cascade]"}
    assert list(tasks["heldout"]["differences"]) == ["mit [ctc+llm cascade] - mit"]
    cached = [json.loads(r) for r in (run / "answers.jsonl").read_text().splitlines()]
    joint = {r["item"]: r["answer"] for r in cached if r["system"] == "mit [ctc+llm]"}
    chained = [r for r in cached if r["system"] == "mit [ctc+llm cascade]"]
    assert chained and all(r["task"] == "heldout" and r["transcript"] == joint[r["item"]] for r in chained)
    assert len(decoded) == len(joint)  # a clip asked in both tasks is decoded once
    # the LLM answers the held-out pair (the recipe's prompt style) from the joint decoder's transcript
    model = SpeechLLM.load(run / "model")
    items = {it.id: it for it in build_tasks(tiny_corpus, cfg.eval, "en_us", bank=mit.bank_of(cfg),
                                             other_langs=cfg.targets.other_langs)["heldout"]}
    for r in chained[:3]:
        want = model.generate_text([r["transcript"]], items[r["item"]].pair, max_new_tokens=12, stop_at_newline=True)
        assert r["answer"] == want[0]


def test_prompt_styles() -> None:
    assert make_instruction("transcribe", "fr_fr", style="pair") == ("A text in French: ", " The same text in French:")
    assert make_instruction("translate", "de_de", "en_us", style="pair")[1] == " The same text in English:"
    assert "stop, play" in make_instruction("intent", "fr_fr", labels=["stop", "play"], style="pair")[1]
    assert make_instruction("chat", prompt="Who?", style="pair") == ("", "\nWho?")
    with pytest.raises(ValueError, match="unknown prompt style 'xml'"):
        make_instruction("transcribe", style="xml")
    with pytest.raises(ValueError, match="unknown prompt style 'xml'"):
        SpeechLLMSystem(object(), style="xml")


# -- the command line -------------------------------------------------------------------------------------------------
def test_cli_mit_pipeline_and_generate(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    args = ["--config", str(MIT_TINY), "--manifest", str(tiny_corpus), "--out", str(run)]
    assert main(["data", "targets", *args]) == 0
    assert f"24 training examples; counts in {run / 'targets.json'}" in capsys.readouterr().out
    assert main(["train", "mit", *args, "--set", "train.steps=2", "--set", "ctc.steps=1"]) == 0
    assert f"model saved to {run / 'model'}" in capsys.readouterr().out
    assert [r["step"] for r in metric_rows(run)] == [1, 2] and [r["step"] for r in metric_rows(run / "ctc")] == [1]
    assert main(["eval", "generate", *args]) == 0  # a config with a targets section is a mit config
    result = json.loads((run / "eval.json").read_text())
    assert set(result["tasks"]) == {"asr", "translation", "heldout"}
    assert all(set(t["systems"]) == {"mit", "untrained"} for t in result["tasks"].values())
    assert "Held-out instructions" in capsys.readouterr().out

    # the model is prompted in the style it was trained with: xP3 pairs
    asked = []
    monkeypatch.setattr(SpeechLLM, "generate", lambda self, wavs, ins, **kw: asked.append(ins) or ["ok"] * len(wavs))
    audio = str(sorted((tiny_corpus.parent / "audio" / "fr_fr").glob("*.flac"))[0])
    assert main(["generate", "--model", str(run / "model"), "--audio", audio, "--lang", "fr_fr"]) == 0
    assert asked == [("A text in French: ", " The same text in French:")]
    assert capsys.readouterr().out == f"{audio}\tok\n"
    bad = run / "bad.yaml"
    bad.write_text("targets: {variant: X}\n")
    assert main(["train", "mit", "--config", str(bad), "--manifest", str(tiny_corpus), "--out", str(run / "x")]) == 2
    assert "targets.variant must be one of T, MI, TMI" in capsys.readouterr().err
    # a user template file with a mistake: exit code 2, the file and the template named
    bank = run / "my-bank.yaml"
    bank.write_text("templates:\n  - {id: mine, task: repeat, kind: MI, split: train, postfix: ' Again:'}\n")
    assert main(["data", "targets", *args, "--set", f"targets.banks=[{bank}]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polyvox: error:") and str(bank) in err and "mine" in err and "Traceback" not in err


def test_generation_ends_at_the_first_line_break_after_text() -> None:
    """Base LLMs often open an answer with a blank line: that must not end it (answers were empty before)."""
    from polyvox.models.speech_llm import _LineEnd

    # vocabulary: 0 "a", 1 "\n", 2 " ", 3 "b\n"
    stop = _LineEnd(torch.tensor([False, True, False, True]), torch.tensor([False, True, True, False]))
    rows = torch.tensor([[1, 0, 1], [3, 0, 0], [2, 1, 2]])  # three rows, token by token
    done = [stop(rows[:, : t + 1], None).tolist() for t in range(3)]
    # row 0 ends at the break after "a"; row 1 at once ("b\n"; a finished row is not asked again); row 2 never
    assert done == [[False, True, False], [False, False, False], [True, False, False]]


def test_texts_are_read_by_the_frozen_llm_even_with_trained_lora(tiny_corpus: Path, tmp_path: Path) -> None:
    """Answers to texts (targets, held-out references, the cascade, the KL teacher) come from the LLM as
    loaded: a trained LoRA changes what the model says about speech, never what it answers from a text, so a
    LoRA model writes into the frozen LLM's answer cache only what the frozen LLM says."""
    plain, model = tiny_model(), tiny_model(lora_rank=4)
    with torch.no_grad():
        for n, p in model.lm.named_parameters():
            if ".lora_" in n:
                p.add_(torch.randn_like(p))
    pairs = [("A text: ", " Again:")] * 2
    texts, targets = ["red cat", "blue dog"], [[5, 6, 7], [8, 9]]
    wavs = [tone_speech("red cat"), tone_speech("blue dog sun moon", 1)]
    assert model.generate_text(texts, pairs, max_new_tokens=6) == plain.generate_text(texts, pairs, max_new_tokens=6)
    with torch.no_grad():
        speech, _, teacher = model.forward(wavs, pairs, targets, texts)
        speech_plain, _, teacher_plain = plain.forward(wavs, pairs, targets, texts)
    assert torch.allclose(teacher, teacher_plain, atol=1e-5)  # the KL teacher is the frozen LLM
    assert not torch.allclose(speech, speech_plain, atol=1e-3)  # the speech path keeps its LoRA
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.lm.named_parameters())

    cfg = mit_cfg(tiny_corpus, tmp_path / "a", "targets.repeat_target=llm")
    lora_answers = mit.run_targets(cfg, model)
    rows = (tmp_path / "a" / "targets.jsonl").read_text()
    plain_answers = mit.run_targets(mit_cfg(tiny_corpus, tmp_path / "b", "targets.repeat_target=llm"), plain)
    assert [e.target for e in lora_answers] == [e.target for e in plain_answers]
    assert rows == (tmp_path / "b" / "targets.jsonl").read_text()
