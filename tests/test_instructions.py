"""The instruction template bank: default bank, expansion, variants, draws, user files and bad files."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter

import pytest

from polyvox.data.instructions import (
    SPLITS,
    TASKS,
    Bank,
    Instruction,
    TemplateBankError,
    draw_instructions,
    load_bank,
)
from polyvox.data.languages import language_name

LANGS = ("fr_fr", "de_de", "cmn_hans_cn", "sw_ke")
OTHERS = ("fr_fr", "de_de", "es_419", "ru_ru", "sw_ke")
UNFILLED = re.compile(r"[{}]")


@pytest.fixture(scope="module")
def bank() -> Bank:
    return load_bank()


def test_default_bank_is_valid_and_covers_every_task(bank):
    assert 60 <= len(bank) <= 100
    assert len({t.id for t in bank}) == len(bank)
    assert {t.task for t in bank} == set(TASKS)
    for task in TASKS:
        mine = [t for t in bank if t.task == task]
        assert all(t.kind == TASKS[task].kind for t in mine)
        assert sum(t.split == "heldout" for t in mine) >= 1, task
        assert sum(t.split == "train" for t in mine) >= 3, task
        assert {"en", "de", "fr", "es", "ru"} <= {t.lang for t in mine}, task
    assert all(t.split in SPLITS for t in bank)
    assert {len(v) for v in bank.topics.values()} == {len(bank.topics["en"])}


@pytest.mark.parametrize("lang", LANGS)
def test_every_template_expands_for_every_language(bank, lang):
    for t in bank:
        if not bank.applicable(t, lang, other_langs=OTHERS):
            assert t.target == lang, t.id  # only a fixed target equal to the source leaves no target
            with pytest.raises(ValueError, match="no target language other than the source"):
                bank.expand(t, lang, seed=3, other_langs=OTHERS)
            continue
        ins = bank.expand(t, lang, seed=3, other_langs=OTHERS)
        text = ins.wrap("TRANSCRIPT")
        assert not UNFILLED.search(text), (t.id, text)
        assert (ins.template_id, ins.task, ins.kind, ins.source_lang) == (t.id, t.task, t.kind, lang)
        if "source" in t.slots:
            assert language_name(lang) in text
        if t.target is not None:
            assert ins.target_lang not in (None, lang)
        if "target" in t.slots:
            assert language_name(ins.target_lang) in text
        if "labels" in t.slots:
            assert ins.labels and set(ins.labels) <= set(bank.topics[t.lang])
            assert ", ".join(ins.labels) in text


def test_expansion_is_deterministic(bank):
    topic = bank["topic-en-01"]
    other = bank["translate-en-02"]
    for t in (topic, other):
        a = bank.expand(t, "sw_ke", seed=7, other_langs=OTHERS)
        assert a == bank.expand(t, "sw_ke", seed=7, other_langs=OTHERS)
    assert len({bank.expand(topic, "sw_ke", seed=s).labels for s in range(20)}) > 5
    assert len({bank.expand(other, "sw_ke", seed=s, other_langs=OTHERS).target_lang for s in range(20)}) > 2


def test_draws_are_deterministic_and_depend_on_the_utterance(bank):
    def draw(utt: str, seed: int = 0) -> list[Instruction]:
        return draw_instructions(bank, utt, "fr_fr", "TMI", 4, seed, other_langs=OTHERS)

    assert draw("fr_fr/1") == draw("fr_fr/1")
    assert draw("fr_fr/1") != draw("fr_fr/1", seed=1)
    ids = [tuple(i.template_id for i in draw(f"fr_fr/{k}")) for k in range(100)]
    assert len(set(ids)) > 90
    counts = Counter(t for draw_ids in ids for t in draw_ids)
    assert len(counts) > 0.9 * len(bank.select("TMI"))  # every applicable template comes up


def test_variants_select_by_kind(bank):
    t_only = bank.select("T")
    mi = bank.select("MI")
    assert t_only and {t.task for t in t_only} == {"repeat"}
    assert mi and "repeat" not in {t.task for t in mi}
    assert {t.id for t in bank.select("TMI")} == {t.id for t in t_only} | {t.id for t in mi}
    assert all(t.split == "heldout" for t in bank.select("TMI", "heldout"))
    with pytest.raises(ValueError, match="known: T, MI, TMI"):
        bank.select("XYZ")


@pytest.mark.parametrize("variant", ["T", "MI", "TMI"])
def test_heldout_templates_never_drawn_for_training(bank, variant):
    heldout = {t.id for t in bank if t.split == "heldout"}
    seen = set()
    for k in range(150):
        lang = LANGS[k % len(LANGS)]
        draws = draw_instructions(bank, f"{lang}/{k}", lang, variant, 6, 0, other_langs=OTHERS)
        seen |= {i.template_id for i in draws}
    assert seen and not seen & heldout
    evals = draw_instructions(bank, "x/1", "fr_fr", variant, 3, 0, split="heldout", other_langs=OTHERS)
    assert {i.template_id for i in evals} <= heldout


def test_translate_targets_never_equal_the_source(bank):
    for k in range(200):
        lang = ("en_us", "fr_fr", "de_de", "sw_ke")[k % 4]
        for split in SPLITS:
            for ins in draw_instructions(bank, f"u{k}", lang, "MI", 8, k, split, other_langs=OTHERS):
                if ins.task == "translate":
                    assert ins.target_lang is not None and ins.target_lang != lang
    # English source, English pivot: pivot templates do not apply and are never drawn
    en = draw_instructions(bank, "u", "en_us", "MI", 200, 0, other_langs=OTHERS)
    assert not {i.template_id for i in en} & {t.id for t in bank if t.target in ("pivot", "en_us")}
    with pytest.raises(ValueError, match="equals the source"):
        bank.expand(bank["translate-en-01"], "fr_fr", target_lang="fr_fr", seed=0)
    with pytest.raises(ValueError, match="no target rule"):
        bank.expand(bank["summarise-en-01"], "fr_fr", target_lang="de_de", seed=0)


def test_draws_without_replacement_then_cycle(bank):
    pool = bank.select("T")
    few = draw_instructions(bank, "u", "fr_fr", "T", len(pool), 0)
    assert sorted(i.template_id for i in few) == sorted(t.id for t in pool)
    many = draw_instructions(bank, "u", "fr_fr", "T", 2 * len(pool) + 1, 0)
    assert set(Counter(i.template_id for i in many).values()) <= {2, 3}
    assert draw_instructions(bank, "u", "fr_fr", "T", 0, 0) == []
    with pytest.raises(ValueError, match="n must be"):
        draw_instructions(bank, "u", "fr_fr", "T", -1, 0)


def test_task_balance_gives_each_task_a_turn(bank):
    draws = draw_instructions(bank, "u", "fr_fr", "MI", 9, 0, other_langs=OTHERS, balance="task")
    assert len({i.task for i in draws}) == 9


def test_user_file_overrides_and_adds(tmp_path, caplog):
    user = tmp_path / "mine.yaml"
    user.write_text(
        "- {id: summarise-en-01, task: summarise, kind: MI, split: heldout, postfix: ' Short version:'}\n"
        "- {id: mine-01, task: translate, kind: MI, split: train, target: other, "
        "prefix: 'In {source}: ', postfix: ' In {target}:'}\n",
        encoding="utf-8",
    )
    extra = tmp_path / "more.json"
    extra.write_text(json.dumps({"templates": [{"id": "mine-02", "task": "repeat", "kind": "T",
                                                "split": "train", "prefix": "Say: "}]}), encoding="utf-8")
    default = load_bank()
    with caplog.at_level(logging.INFO, logger="polyvox.data.instructions"):
        bank = load_bank([user, str(extra)])
    assert len(bank) == len(default) + 2
    assert bank["summarise-en-01"].postfix == " Short version:" and bank["summarise-en-01"].split == "heldout"
    assert list(bank.templates).index("summarise-en-01") == list(default.templates).index("summarise-en-01")
    assert "summarise-en-01" in caplog.text and "mine.yaml" in caplog.text
    ins = bank.expand(bank["mine-01"], "fr_fr", seed=0, other_langs=["de_de"])
    assert ins.wrap("x") == "In French: x In German:"
    only = load_bank([user], default=False)
    assert set(only.templates) == {"summarise-en-01", "mine-01"}


GOOD = "{id: a, task: summarise, kind: MI, split: train, postfix: ' Summary:'}"
BAD_FILES = {
    "missing field": ("- {id: a, task: summarise, kind: MI, postfix: x}", r"#0 \(id 'a'\): missing field 'split'"),
    "unknown field": ("- {id: a, task: summarise, kind: MI, split: train, postfx: x}", r"#0 .*unknown field 'postfx'"),
    "unknown task": ("- {id: a, task: sing, kind: MI, split: train, postfix: x}", r"#0 .*unknown task 'sing'"),
    "unknown kind": ("- {id: a, task: summarise, kind: X, split: train, postfix: x}", r"unknown kind 'X'"),
    "kind vs task": ("- {id: a, task: repeat, kind: MI, split: train, postfix: x}", r"task 'repeat' is kind 'T'"),
    "bad split": ("- {id: a, task: summarise, kind: MI, split: dev, postfix: x}", r"bad split 'dev'"),
    "unknown slot": (f"- {GOOD}\n- {{id: b, task: summarise, kind: MI, split: train, prefix: 'In {{lang}}: '}}",
                     r"#1 \(id 'b'\): prefix: unknown slot \{lang\}"),
    "broken braces": ("- {id: a, task: summarise, kind: MI, split: train, postfix: 'x {source'}", r"postfix: expected .}."),
    "format spec": ("- {id: a, task: summarise, kind: MI, split: train, postfix: '{source!r}'}", r"conversion"),
    "duplicate id": (f"- {GOOD}\n- {GOOD}", r"#1: duplicate id 'a' \(first at #0\)"),
    "target slot, no rule": ("- {id: a, task: summarise, kind: MI, split: train, postfix: 'in {target}:'}",
                             r"\{target\} is used but the template has no target rule"),
    "translate, no rule": ("- {id: a, task: translate, kind: MI, split: train, postfix: 'x:'}", r"needs a target rule"),
    "pivot, no slot": ("- {id: a, task: translate, kind: MI, split: train, target: pivot, postfix: 'x:'}",
                       r"needs a \{target\} slot"),
    "bad target": ("- {id: a, task: translate, kind: MI, split: train, target: xx_yy, postfix: 'x:'}",
                   r"unknown language code 'xx_yy'"),
    "empty text": ("- {id: a, task: summarise, kind: MI, split: train, prefix: ' ', postfix: ''}", r"both empty"),
    "not a string": ("- {id: a, task: summarise, kind: MI, split: train, lang: no, postfix: x}",
                     r"field 'lang' must be a string, got False"),
    "template not a mapping": ("- just text", r"#0: expected a mapping"),
    "malformed yaml": ("- {id: a, task: [summarise", r"malformed YAML"),
    "scalar file": ("hello", r"expected a list of templates or a mapping with 'templates:', got str"),
    "empty file": ("", r"got NoneType"),
    "mapping without templates": ("topics: [a, b]", r"no 'templates:' key"),
    "unknown top key": (f"templates: [{GOOD}]\nlabels: [a]", r"unknown key 'labels'"),
    "ragged topics": (f"templates: [{GOOD}]\ntopics: {{en: [a, b], de: [a]}}", r"must have one length"),
    "labels without topics": (
        "templates:\n- {id: t, task: topic, kind: MI, split: train, lang: it, postfix: 'Temi: {labels}.'}",
        r"template 't' uses \{labels\} but there is no topic list for its language 'it'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_get_clear_errors(tmp_path, case):
    content, pattern = BAD_FILES[case]
    path = tmp_path / "bad_bank.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TemplateBankError, match=pattern) as err:
        load_bank([path])
    assert str(path) in str(err.value)


def test_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "bank.json"
    path.write_text('[{"id": "a",', encoding="utf-8")
    with pytest.raises(TemplateBankError, match=r"bank\.json: malformed JSON"):
        load_bank([path])
    with pytest.raises(TemplateBankError, match=r"nope\.yaml: cannot read"):
        load_bank([tmp_path / "nope.yaml"])


def test_prompt_presets_come_from_the_bank(bank, tmp_path):
    """`generate --prompt transcribe` and the evaluation ask the bank's presets: a pair-style transcribe prompt is
    the repeat-en-01 template itself (one copy), and a user file may replace a preset."""
    from polyvox.models.speech_llm import make_instruction

    assert list(bank.presets) == ["transcribe", "translate", "intent", "continue", "chat"]
    t = bank["repeat-en-01"]
    assert (bank.presets["transcribe"].prefix, bank.presets["transcribe"].postfix) == (t.prefix, t.postfix)
    german = language_name("de_de")
    assert make_instruction("transcribe", "de_de", style="pair") == (t.prefix.format(source=german),
                                                                     t.postfix.format(source=german))
    assert make_instruction("translate", "fr_fr", "en_us") == "Translate the following French input into English."
    mine = tmp_path / "mine.yaml"
    mine.write_text('templates: []\npresets:\n  transcribe: {instruction: "Repeat the {source} input.", '
                    'prefix: "", postfix: "\\nSame:"}\n')
    ours = load_bank([mine]).presets
    assert ours["transcribe"].instruction == "Repeat the {source} input." and ours["translate"] == bank.presets["translate"]
    for body, pattern in (('{x: {prefix: "", postfix: ""}}', "needs 'instruction'"),
                          ('{x: {instruction: "{lang}", postfix: ""}}', "unknown slot 'lang'"),
                          ('{x: {instruction: "", template: nope}}', "no template 'nope'"),
                          ('{x: {instruction: "", postfix: "", colour: red}}', "unknown key 'colour'")):
        mine.write_text(f"templates: []\npresets: {body}\n")
        with pytest.raises(TemplateBankError, match=rf"mine\.yaml: preset 'x': {pattern}"):
            load_bank([mine])
