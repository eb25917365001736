"""Zero-shot generation evaluation: metrics, task building, scoring with fake systems, cascade, report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, tone_speech

from polyvox.audio import load_audio, write_flac
from polyvox.config import GenerationEvalConfig
from polyvox.data.manifest import Utterance, read_manifest, write_manifest
from polyvox.eval.generation import evaluate_generation
from polyvox.eval.metrics import accuracy, cer, chrf, normalize_text, wer
from polyvox.eval.report import generation_markdown, write_generation_report
from polyvox.eval.scoring import parse_label, task_languages
from polyvox.eval.systems import CascadeSystem, OracleTextSystem, SpeechLLMSystem
from polyvox.eval.tasks import (
    build_tasks,
    check_tasks,
    degraded_items,
    label_name,
    shot_examples,
    shown_names,
)
from polyvox.models.speech_llm import few_shot_transcription, make_instruction

LANGS = ("fr_fr", "de_de", "en_us")
INTENTS = {
    "fr_fr": ["weather:current_weather.intent", "weather:news", "news:news", "volume:volume.mute",
              "volume:volume.mute.toggle", "personal:WhoMadeYou", "date-time:what.time.is.it"],
    "de_de": ["weather:current_weather.intent", "news:news", "personal:WhoMadeYou"],
}


# -- metrics -----------------------------------------------------------------------------------------


def test_wer_hand_computed():
    # 4 reference words, 1 substitution (cat -> dog) + 1 deletion (down): 2 / 4
    assert wer(["the cat sat down"], ["the dog sat"]) == pytest.approx(0.5)
    # corpus level: (2 + 0) / (4 + 2) errors, not the mean of per-sentence rates
    assert wer(["the cat sat down", "hello there"], ["the dog sat", "hello there"]) == pytest.approx(2 / 6)
    assert wer(["Hello, World!"], ["hello world"]) == 0.0  # normalised before scoring
    assert wer(["a b c"], [""]) == 1.0  # an empty hypothesis deletes every word


def test_cer_hand_computed():
    assert cer(["abcd"], ["abxd"]) == pytest.approx(0.25)
    assert cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the space is a character
    assert cer(["abc"], [""]) == 1.0
    assert cer(["Ça va?"], ["ça va"]) == 0.0


def test_metric_errors():
    with pytest.raises(ValueError, match="2 references but 1"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference"):
        wer(["?!"], ["a"])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_chrf_and_accuracy():
    assert chrf(["The file cannot be found."], ["The file cannot be found."]) == pytest.approx(100.0)
    assert chrf(["completely different"], ["The file cannot be found."]) < 30
    assert accuracy(["a", "b", "x", "d"], ["a", "b", "c", "d"]) == 0.75
    assert accuracy([None, "b"], ["a", "b"]) == 0.5


def test_normalize_text():
    assert normalize_text("  Ｈｅｌｌｏ，  WORLD!!\n") == "hello world"  # NFKC folds full-width forms
    assert normalize_text("Straße l'homme") == "strasse l homme"
    assert normalize_text("5 € + 3$ = ½") == "5 3 1 2"  # symbols (S*) go, digits stay
    assert normalize_text("Cafe\u0301 «déjà»") == "café déjà"  # composed, quotes removed
    assert normalize_text("你好，世界。") == "你好 世界"
    assert normalize_text("") == ""


# -- labels ------------------------------------------------------------------------------------------


def test_label_names_are_readable_and_unique():
    assert label_name("weather:current_weather.intent") == "current weather"
    assert label_name("personal:WhoMadeYou") == "who made you"
    assert label_name("date-time:what.time.is.it") == "what time is it"
    assert shown_names(["weather:news", "news:news", "volume:volume.mute"]) == [
        "weather news", "news news", "volume mute"]
    names = shown_names(["a:x", "a-:x", "b:y"])
    assert len({normalize_text(n) for n in names}) == 3


def test_parse_label():
    shown = ["volume mute", "volume mute toggle", "who made you"]
    assert parse_label("Volume mute toggle.", shown) == (1, False)  # longer label at a tie
    assert parse_label("I think: who made you, or volume mute", shown) == (2, False)  # earliest wins
    assert parse_label("whom made u", shown) == (2, True)  # fuzzy fallback
    assert parse_label("  ", shown) == (None, False)
    assert parse_label("unmuted", ["mute", "who"]) == (0, True)  # whole words only for containment


# -- fixtures ----------------------------------------------------------------------------------------


def write_corpus(root, corrupt: str | None = None):
    """Data manifest (8 clips per language, 6 test; some lack a translation) and an intents manifest."""
    utts = []
    for lang in LANGS:
        for i in range(8):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3))
            audio = f"audio/{lang}/{i:03d}.flac"
            write_flac(root / audio, tone_speech(text[:4], i))
            translations = {"en_us": text.upper()} if lang != "en_us" and i % 3 != 2 else {}
            split = "test" if i < 6 else "train"
            utts.append(Utterance(id=f"{lang}/{i:03d}", audio=audio, text=text, lang=lang, split=split,
                                  translations=translations, group=f"g{i}"))
    manifest = write_manifest(root / "manifest.jsonl", utts)
    intents = []
    for lang, labels in INTENTS.items():
        for k, label in enumerate(labels):
            for i in range(3):
                uid = f"intents/{lang}/{k}{i}"
                audio = f"audio/intents/{lang}/{k}{i}.flac"
                write_flac(root / audio, tone_speech(label[:4], i))
                intents.append(Utterance(id=uid, audio=audio, text=f"{label} {i}", lang=lang,
                                         split="test" if i < 2 else "train", intent=label))
    write_manifest(root / "intents.jsonl", intents)
    if corrupt:
        (root / corrupt).write_bytes(b"not audio at all")
    return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("gen"))


def gold_answer(item) -> str:
    return item.shown[item.labels.index(item.reference)] if item.labels else item.reference


class Oracle:
    def answer(self, items, wavs):
        assert len(items) == len(wavs) and len({it.lang for it in items}) == 1
        return [gold_answer(it) for it in items]


class Silent:
    def answer(self, items, wavs):
        return [""] * len(items)


# -- build_tasks -------------------------------------------------------------------------------------


def test_build_tasks_sample_and_references(corpus):
    cfg = GenerationEvalConfig(per_lang=3, seed=1)
    tasks = build_tasks(corpus, cfg, "en_us")
    assert list(tasks) == ["asr", "translation", "intent"]
    assert tasks == build_tasks(corpus, cfg, "en_us")  # seeded and deterministic
    asr, xl = tasks["asr"], tasks["translation"]
    for lang in LANGS:
        assert len([it for it in asr if it.lang == lang]) == 3
    assert all(int(it.id[-3:]) < 6 for it in asr)  # test split only
    texts = {u.id: u.text for u in read_manifest(corpus)}
    assert all(it.reference == texts[it.id] for it in asr)
    assert {it.lang for it in xl} == {"fr_fr", "de_de"}  # not the pivot itself
    assert all(it.reference.isupper() and "English" in it.instruction for it in xl)
    assert all(int(it.id[-3:]) % 3 != 2 for it in xl)  # only clips with a translation
    assert "French" in next(it.instruction for it in asr if it.lang == "fr_fr")
    full = build_tasks(corpus, GenerationEvalConfig(per_lang=0, tasks=["asr"]), "en_us")
    assert list(full) == ["asr"] and len(full["asr"]) == 6 * len(LANGS)
    other = build_tasks(corpus, GenerationEvalConfig(per_lang=3, seed=2, tasks=["asr"]), "en_us")
    assert [it.id for it in other["asr"]] != [it.id for it in asr]


def test_build_tasks_intent_distractors(corpus):
    cfg = GenerationEvalConfig(per_lang=0, intent_choices=4, tasks=["intent"])
    items = build_tasks(corpus, cfg, "en_us")["intent"]
    assert len(items) == 2 * (len(INTENTS["fr_fr"]) + len(INTENTS["de_de"]))  # the test split
    for it in items:
        assert it.reference in it.labels
        assert len(it.labels) == min(4, len(INTENTS[it.lang])) == len(set(it.labels))
        assert set(it.labels) <= set(INTENTS[it.lang])
        assert len({normalize_text(s) for s in it.shown}) == len(it.shown)
        assert all(s in it.instruction for s in it.shown)
        assert ":" not in " ".join(it.shown)  # human-readable names, not raw labels
    fr = [it for it in items if it.lang == "fr_fr"]
    assert len({tuple(it.labels) for it in fr}) > 1  # distractors drawn per item
    assert items == build_tasks(corpus, cfg, "en_us")["intent"]


def test_build_tasks_errors_and_missing_intents(corpus, tmp_path):
    with pytest.raises(ValueError, match="known: asr, translation, intent"):
        build_tasks(corpus, GenerationEvalConfig(tasks=["asr", "summarise"]), "en_us")
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        build_tasks(corpus, GenerationEvalConfig(intents_manifest=str(tmp_path / "nowhere.jsonl")), "en_us")
    lone = tmp_path / "lone"
    write_manifest(lone / "manifest.jsonl", [Utterance("x", "x.flac", "a b", "fr_fr", split="test")])
    assert list(build_tasks(lone / "manifest.jsonl", GenerationEvalConfig(), "en_us")) == ["asr"]


def test_few_shot_transcription_prompt_hand_checked():
    prefix, postfix = few_shot_transcription("fr_fr", ["Ouvrir le fichier", "Fermer"])
    assert prefix == ("Each French input is written down word for word.\n\n"
                      "Input: Ouvrir le fichier\nTranscript: Ouvrir le fichier\n\n"
                      "Input: Fermer\nTranscript: Fermer\n\nInput: ")
    assert postfix == "\nTranscript:"


def test_shot_examples_come_from_training_sentences_of_the_language_never_a_test_one():
    def utt(i, lang, text, split, group=None):
        return Utterance(f"{lang}/{i}", f"{i}.flac", text, lang, split=split, group=group)

    test = [utt(0, "fr_fr", "Le fichier est introuvable.", "test", "g-test")]
    pool = [utt(1, "fr_fr", "le fichier est INTROUVABLE", "train"),  # the test sentence, once normalised
            utt(2, "fr_fr", "Une autre phrase du même groupe", "train", "g-test"),  # the test sentence's group
            utt(3, "fr_fr", "court", "train"),  # under 20 characters
            utt(4, "fr_fr", "une phrase beaucoup trop longue pour servir d'exemple à qui que ce soit", "train"),  # 71
            *[utt(10 + i, "fr_fr", f"Ouvrir le dossier numéro {i}", "train") for i in range(4)],
            utt(20, "de_de", "Die Datei wurde gefunden", "train")]  # one German sentence only
    eligible = [f"Ouvrir le dossier numéro {i}" for i in range(4)]
    assert sorted(shot_examples(pool, test, 4)["fr_fr"]) == eligible  # none of the four excluded above
    assert "fr_fr" not in shot_examples(pool, test, 5)
    got = shot_examples(pool, test, 2, seed=0)
    assert list(got) == ["fr_fr"]  # German has fewer than 2: none
    assert len(set(got["fr_fr"])) == 2 and set(got["fr_fr"]) <= set(eligible)
    assert got == shot_examples(pool, test, 2, seed=0)  # seeded
    assert {tuple(shot_examples(pool, test, 2, seed=s)["fr_fr"]) for s in range(8)} != {tuple(got["fr_fr"])}
    assert shot_examples(pool, test, 1)["de_de"] == ["Die Datei wurde gefunden"]


def test_build_tasks_few_shot_asr_prompts(tmp_path):
    utts = [Utterance(f"fr_fr/{i}", f"{i}.flac", f"phrase de test numéro {i}", "fr_fr", split="test")
            for i in range(3)]
    utts += [Utterance(f"fr_fr/t{i}", f"t{i}.flac", f"phrase d'entraînement numéro {i}", "fr_fr", split="train")
             for i in range(5)]
    utts += [Utterance("cs_cz/0", "c.flac", "testovací věta", "cs_cz", split="test")]  # unseen: no training text
    path = write_manifest(tmp_path / "manifest.jsonl", utts)
    items = build_tasks(path, GenerationEvalConfig(tasks=["asr"], per_lang=0, shots=3), "en_us")["asr"]
    train = {u.text for u in utts if u.split == "train"}
    for it in items:
        if it.lang == "cs_cz":  # zero-shot, as without eval.shots
            assert it.shots == 0 and it.instruction == make_instruction("transcribe", "cs_cz")
            continue
        prefix, postfix = it.instruction
        shown = [line.removeprefix("Input: ") for line in prefix.split("\n") if line.startswith("Input: ")][:-1]
        assert it.shots == 3 and it.pair == it.instruction and postfix == "\nTranscript:"
        assert len(shown) == 3 and set(shown) <= train and it.text not in prefix
    assert len({it.instruction for it in items if it.lang == "fr_fr"}) == 1  # one prompt per language
    langs = task_languages(items, {("asr", it.id) for it in items}, "asr", {"fr_fr"})
    assert langs == {"cs_cz": {"n": 1, "seen": False, "shots": 0}, "fr_fr": {"n": 3, "seen": True, "shots": 3}}
    table = generation_markdown({"tasks": {"asr": {"metrics": ["CER"], "headline": "CER", "higher_is_better": False,
                                                   "languages": langs, "averages": {}, "systems": {}}}})
    assert "| language | seen | n | shots |" in table and "| fr_fr | yes | 3 | 3 |" in table
    zero = build_tasks(path, GenerationEvalConfig(tasks=["asr"], per_lang=0), "en_us")["asr"]
    assert all(it.shots == 0 and isinstance(it.instruction, str) for it in zero)
    with pytest.raises(ValueError, match="shots"):
        GenerationEvalConfig(shots=-1)
    from polyvox.recipes.speech_llm import evaluate_checkpoint

    with pytest.raises(ValueError, match="first line break"):  # the next example would run on into the answer
        evaluate_checkpoint(tmp_path / "model", None, GenerationEvalConfig(shots=3), tmp_path, {}, "eval", "blsp",
                            stop_at_newline=False)


# -- evaluate_generation -----------------------------------------------------------------------------


def test_oracle_and_silent_systems(corpus):
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=4), "en_us")
    systems = {"oracle": Oracle(), "silent": Silent()}
    result = evaluate_generation(systems, tasks, None, {"fr_fr"}, batch_size=3,
                                 compare=[("oracle", "silent"), ("silent", "silent")])
    json.dumps(result)  # serialisable
    assert result["bad_lines"] == []
    asr, xl, intent = (result["tasks"][t] for t in ("asr", "translation", "intent"))
    assert asr["headline"] == "CER" and not asr["higher_is_better"]
    oracle = {t: result["tasks"][t]["systems"]["oracle"]["averages"]["all"] for t in result["tasks"]}
    assert oracle["asr"]["WER"] == 0.0 and oracle["asr"]["CER"] == 0.0
    assert oracle["translation"]["chrF"] == pytest.approx(100.0)
    assert oracle["intent"]["accuracy"] == 1.0 and oracle["intent"]["parsed"] == 1.0
    silent = asr["systems"]["silent"]["averages"]["all"]
    assert silent["WER"] == 1.0 and silent["CER"] == 1.0
    assert intent["systems"]["silent"]["averages"]["all"]["accuracy"] == 0.0
    assert set(asr["averages"]) == {"seen", "unseen", "all"} and asr["averages"]["seen"]["languages"] == 1
    assert asr["languages"]["fr_fr"] == {"n": 4, "seen": True}
    assert intent["languages"]["de_de"]["chance"] == pytest.approx(1 / 3)
    assert intent["languages"]["fr_fr"]["chance"] == pytest.approx(1 / 5)
    for t in result["tasks"].values():  # headline intervals: a perfect and a silent system have no spread
        perfect, none = (t["systems"][n]["intervals"]["all"][t["headline"]] for n in ("oracle", "silent"))
        best, worst = (1.0, 0.0) if t["headline"] == "accuracy" else (100.0, 0.0) if t["higher_is_better"] else (0.0, 1.0)
        assert perfect == pytest.approx([best, best]) and none == pytest.approx([worst, worst])
    for t in result["tasks"].values():  # paired differences: perfect minus silent, per group, and a tie
        d = t["differences"]["oracle - silent"]
        assert set(d) == {"seen", "unseen", "all"} and d["all"]["better"] == "oracle"
        gap = {"CER": -1.0, "accuracy": 1.0}.get(t["headline"], 100.0)
        assert d["seen"]["mean"] == pytest.approx(gap) and d["seen"]["ci95"] == pytest.approx([gap, gap])
        assert t["differences"]["silent - silent"]["all"] == {"metric": t["headline"], "mean": 0.0,
                                                              "ci95": [0.0, 0.0], "better": None}
    assert "| oracle - silent | -100.0 [-100.0, -100.0] oracle |" in generation_markdown(result)
    ex = xl["systems"]["oracle"]["examples"]["fr_fr"]
    assert 0 < len(ex) <= 3 and all(r == a for r, a in ex)


class AsrOnly(Oracle):
    tasks = ("asr",)

    def __init__(self):
        self.asked = []

    def answer(self, items, wavs):
        self.asked += [it.id for it in items]
        return super().answer(items, wavs)


def test_a_system_with_tasks_is_asked_those_only(corpus, tmp_path):
    """A system's ``tasks`` (base task names, as the joint CTC/LLM system has): asked the ASR items and their degraded
    copies, no other; scored and paired there only."""
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=2), "en_us")
    tasks["asr:telephone"] = degraded_items(tasks["asr"], corpus.parent, tmp_path, "telephone")
    only = AsrOnly()
    result = evaluate_generation({"only": only, "silent": Silent()}, tasks, compare=[("only", "silent")])
    assert sorted(only.asked) == sorted(it.id for t in ("asr", "asr:telephone") for it in tasks[t])
    for name, t in result["tasks"].items():
        asr = name.startswith("asr")
        assert ("only" in t["systems"]) == asr and ("only - silent" in t["differences"]) == asr, name
        assert "silent" in t["systems"]


def test_bad_audio_is_reported_and_the_rest_scored(tmp_path):
    manifest = write_corpus(tmp_path, corrupt="audio/de_de/001.flac")
    tasks = build_tasks(manifest, GenerationEvalConfig(per_lang=0, tasks=["asr", "translation"]), "en_us")
    result = evaluate_generation({"oracle": Oracle()}, tasks, seen_langs=set(), batch_size=4)
    bad = {(b["task"], b["id"]) for b in result["bad_lines"]}
    assert bad == {("asr", "de_de/001"), ("translation", "de_de/001")}
    assert "de_de/001" in result["bad_lines"][0]["error"]
    asr = result["tasks"]["asr"]
    assert asr["languages"]["de_de"]["n"] == 5 and asr["languages"]["fr_fr"]["n"] == 6
    assert asr["systems"]["oracle"]["averages"]["all"]["WER"] == 0.0
    assert "de_de/001" in generation_markdown(result)


def test_relative_audio_paths_use_root(corpus):
    items = [replace(it, audio=str(it.audio).removeprefix(str(corpus.parent.resolve()) + "/"))
             for it in build_tasks(corpus, GenerationEvalConfig(per_lang=2, tasks=["asr"]), "en_us")["asr"]]
    assert not items[0].audio.startswith("/")
    result = evaluate_generation({"oracle": Oracle()}, {"asr": items}, corpus.parent)
    assert result["bad_lines"] == [] and result["tasks"]["asr"]["averages"]["all"]["languages"] == 3


def test_unknown_task_in_evaluate():
    with pytest.raises(ValueError, match="known"):
        evaluate_generation({}, {"summary": []})


# -- systems -----------------------------------------------------------------------------------------


class FakeLLM:
    def __init__(self):
        self.calls = []

    def generate(self, wavs, instructions, **kw):
        self.calls.append(("speech", len(wavs), list(instructions), kw))
        return [f"heard {len(w)}" for w in wavs]

    def generate_text(self, texts, instructions, **kw):
        self.calls.append(("text", list(texts), list(instructions), kw))
        return list(texts)  # echoes the transcript


class FakeTranscriber:
    def __init__(self):
        self.clips = 0

    def transcribe(self, clips, lang, batch_size=8):
        self.clips += len(clips)
        return [f"{lang} transcript" for _ in clips]


def test_speech_llm_system_passes_instructions_and_options(corpus):
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=2, tasks=["asr"]), "en_us")
    llm = FakeLLM()
    evaluate_generation({"llm": SpeechLLMSystem(llm, max_new_tokens=7)}, tasks, batch_size=8)
    kind, n, instructions, kw = llm.calls[0]
    assert kind == "speech" and n == 2 and kw == {"stop_at_newline": True, "max_new_tokens": 7}
    assert instructions == [it.instruction for it in tasks["asr"][:2]]


def test_cascade_transcribes_each_clip_once(corpus):
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=4), "en_us")
    llm, asr = FakeLLM(), FakeTranscriber()
    cascade = CascadeSystem(llm, asr, max_new_tokens=5)
    result = evaluate_generation({"cascade": cascade}, tasks, batch_size=3)
    ids = {it.id for items in tasks.values() for it in items}
    shared = {it.id for it in tasks["asr"]} & {it.id for it in tasks["translation"]}
    assert shared  # the same clips appear in both tasks
    assert asr.clips == len(ids) == len(cascade.transcripts)
    assert all(c[0] == "text" and c[3]["max_new_tokens"] == 5 for c in llm.calls)
    assert llm.calls[0][1] == ["de_de transcript"] * len(llm.calls[0][1])
    systems = result["tasks"]["asr"]["systems"]
    assert set(systems) == {"cascade", "cascade front-end"}
    assert systems["cascade front-end"]["averages"]["all"]["WER"] > 0


class KeyedOracle(Oracle):
    """The gold answers, under a cache key, counting what it is asked."""

    def __init__(self, key):
        self.key, self.asked = key, 0

    def answer(self, items, wavs):
        self.asked += len(items)
        return super().answer(items, wavs)


def test_answer_cache_resumes_and_is_keyed_by_system_and_item(corpus, tmp_path):
    """Keyed systems are asked once per item and key; unkeyed ones always; a changed item is asked again, and a row
    cut off by a kill is dropped."""
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=3), "en_us")
    n = sum(map(len, tasks.values()))
    cache = tmp_path / "answers.jsonl"
    first = KeyedOracle("a")
    want = evaluate_generation({"gold": first, "silent": Silent()}, tasks, batch_size=4, cache=cache)
    assert first.asked == n and len(cache.read_text().splitlines()) == n  # "silent" has no key
    again = KeyedOracle("a")
    assert evaluate_generation({"gold": again, "silent": Silent()}, tasks, batch_size=4, cache=cache) == want
    assert again.asked == 0
    other = KeyedOracle("b")
    evaluate_generation({"gold": other}, tasks, cache=cache)
    assert other.asked == n
    changed = KeyedOracle("a")
    evaluate_generation({"gold": changed}, {"asr": [replace(tasks["asr"][0], text="other words"), *tasks["asr"][1:]]},
                        cache=cache)
    assert changed.asked == 1
    with cache.open("a") as f:
        f.write('{"key": "a", "id": "trunc')
    last = KeyedOracle("a")
    assert evaluate_generation({"gold": last, "silent": Silent()}, tasks, batch_size=4, cache=cache) == want
    assert last.asked == 0 and cache.read_text().endswith("\n")


def test_cached_cascade_keeps_its_front_end_transcripts(corpus, tmp_path):
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=3, tasks=["asr"]), "en_us")
    asr = FakeTranscriber()
    runs = []
    for _ in range(2):
        cascade = CascadeSystem(FakeLLM(), asr)
        cascade.key = "cascade"  # FakeLLM has no config to derive a key from
        runs.append(evaluate_generation({"cascade": cascade}, tasks, cache=tmp_path / "a.jsonl"))
    assert asr.clips == len(tasks["asr"])  # the second run transcribed nothing
    assert runs[0] == runs[1] and "cascade front-end" in runs[1]["tasks"]["asr"]["systems"]
    # the same clips under another prompt: new answers, but the front-end's transcripts come from the cache
    n = len(tasks["asr"])
    for front_end, prompt, transcribed in (("whisper-x", "again", n), ("whisper-x", "once more", 0), ("whisper-y", "again", n)):
        asr.key, asr.clips, llm = front_end, 0, FakeLLM()
        cascade = CascadeSystem(llm, asr)
        cascade.key = f"cascade {front_end}"
        asked = {"asr": [replace(it, instruction=f"Say it {prompt} ({it.lang}).") for it in tasks["asr"]]}
        again = evaluate_generation({"cascade": cascade}, asked, cache=tmp_path / "a.jsonl")
        assert asr.clips == transcribed and len(llm.calls) == 3  # each new question is asked (a batch a language)
        assert again["tasks"]["asr"]["systems"]["cascade front-end"] == runs[0]["tasks"]["asr"]["systems"]["cascade front-end"]


def test_oracle_text_reads_the_transcript_and_agreement_is_chrf_against_it(corpus):
    """The oracle-text system asks the LLM each item's own prompt about its gold transcript; every system's
    `agreement` is the chrF of its answers against the oracle's, per language (hand-computed here)."""
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=3), "en_us")
    items = {it.id: it for its in tasks.values() for it in its}
    assert all(it.text for its in tasks.values() for it in its)
    llm = FakeLLM()  # echoes the transcript it reads
    result = evaluate_generation({"oracle": OracleTextSystem(llm, max_new_tokens=9), "gold": Oracle(),
                                  "silent": Silent()}, tasks, batch_size=8)
    assert {c[0] for c in llm.calls} == {"text"} and all(c[3]["max_new_tokens"] == 9 for c in llm.calls)
    for _, texts, instructions, _ in llm.calls:
        assert len(texts) == len(instructions) and all(t in {it.text for it in items.values()} for t in texts)
    for task, t in result["tasks"].items():
        assert t["metrics"][-1] == "agreement"
        assert t["systems"]["oracle"]["averages"]["all"]["agreement"] == pytest.approx(100.0)
        assert t["systems"]["silent"]["averages"]["all"]["agreement"] == 0.0
        for lang in t["languages"]:
            its = [it for it in tasks[task] if it.lang == lang]
            want = chrf([gold_answer(it) for it in its], [it.text for it in its])
            assert t["systems"]["gold"]["languages"][lang]["agreement"] == pytest.approx(want)
    assert result["tasks"]["asr"]["systems"]["gold"]["averages"]["all"]["agreement"] == pytest.approx(100.0)
    assert result["tasks"]["translation"]["systems"]["gold"]["averages"]["all"]["agreement"] == 0.0  # upper case
    gold_intent = result["tasks"]["intent"]["systems"]["gold"]  # label names against "<raw label> <i>"
    lo, hi = gold_intent["intervals"]["all"]["agreement"]
    assert lo < gold_intent["averages"]["all"]["agreement"] < hi
    avg_row = next(r for r in generation_markdown(result).splitlines() if r.startswith("| **all avg**") and "[" in r)
    assert f"[{lo:.1f}, {hi:.1f}]" in generation_markdown(result) and avg_row.count("[") >= 3
    plain = evaluate_generation({"gold": Oracle()}, {"asr": tasks["asr"]})
    assert "agreement" not in plain["tasks"]["asr"]["metrics"]
    with pytest.raises(ValueError, match="transcript"):
        OracleTextSystem(llm).answer([replace(tasks["asr"][0], text="")], [None])


def test_continuation_task_is_scored_by_agreement_with_the_oracle_alone(corpus):
    """The continuation task asks BLSP's training prompt about the ASR sample's clips; it has no reference, so its
    headline is the agreement with the oracle-text system, with intervals, and it refuses to run without one."""
    tasks = build_tasks(corpus, GenerationEvalConfig(tasks=["asr", "continuation"], per_lang=3), "en_us")
    cont = tasks["continuation"]
    assert [it.id for it in cont] == [it.id for it in tasks["asr"]]
    assert {it.instruction for it in cont if it.lang == "fr_fr"} == {make_instruction("continue", "fr_fr")}
    assert all(it.reference == "" and it.text for it in cont)
    llm = FakeLLM()
    result = evaluate_generation({"oracle": OracleTextSystem(llm), "gold": Oracle(), "silent": Silent()},
                                 {"continuation": cont}, batch_size=8)
    t = result["tasks"]["continuation"]
    assert t["headline"] == "agreement" and t["metrics"] == ["agreement"]
    assert t["systems"]["oracle"]["averages"]["all"]["agreement"] == pytest.approx(100.0)
    assert t["systems"]["silent"]["averages"]["all"]["agreement"] == 0.0
    lo, hi = t["systems"]["oracle"]["intervals"]["all"]["agreement"]
    assert lo == pytest.approx(100.0) and hi == pytest.approx(100.0)
    assert "continuation" in generation_markdown(result).lower()
    with pytest.raises(ValueError, match="oracle"):
        evaluate_generation({"gold": Oracle()}, {"continuation": cont})


def test_asr_on_degraded_copies_is_scored_as_asr_under_its_own_ids(corpus, tmp_path):
    """`degraded_items`: the ASR items about telephone-band copies of their clips (written once under the folder,
    ids suffixed so caches keep them apart), evaluated as task asr:telephone with the ASR metrics and report."""
    asr = build_tasks(corpus, GenerationEvalConfig(tasks=["asr"], per_lang=2), "en_us")["asr"]
    tel = degraded_items(asr, corpus.parent, tmp_path / "degraded", "telephone")
    assert [it.id for it in tel] == [f"{it.id}#telephone" for it in asr]
    assert all(Path(it.audio).is_file() and str(tmp_path / "degraded" / "telephone") in it.audio for it in tel)
    clean, copy = load_audio(asr[0].audio), load_audio(tel[0].audio)
    assert len(clean) == len(copy) and not np.allclose(clean, copy, atol=1e-3)
    mtime = Path(tel[0].audio).stat().st_mtime_ns
    assert degraded_items(asr, corpus.parent, tmp_path / "degraded", "telephone") == tel  # written once
    assert Path(tel[0].audio).stat().st_mtime_ns == mtime
    result = evaluate_generation({"gold": Oracle(), "silent": Silent()}, {"asr": asr, "asr:telephone": tel})
    t = result["tasks"]["asr:telephone"]
    assert t["headline"] == "CER" and t["systems"]["gold"]["averages"]["all"]["CER"] == 0.0
    assert t["systems"]["silent"]["averages"]["all"]["CER"] == pytest.approx(1.0)
    assert "telephone copies" in generation_markdown(result)
    check_tasks(["asr:noise10db"])
    with pytest.raises(ValueError, match="asr:<condition>"):
        check_tasks(["asr:underwater"])
    with pytest.raises(ValueError, match="unknown condition"):
        degraded_items(asr, corpus.parent, tmp_path, "underwater")


# -- report ------------------------------------------------------------------------------------------


def test_generation_report_files(corpus, tmp_path):
    tasks = build_tasks(corpus, GenerationEvalConfig(per_lang=2), "en_us")
    result = evaluate_generation({"oracle": Oracle(), "silent": Silent()}, tasks, seen_langs={"de_de"})
    paths = write_generation_report(result, tmp_path / "out", "gen", config={"eval": {"per_lang": 2}})
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    md = paths["md"].read_text()
    assert "oracle CER" in md and "silent chrF" in md and "silent accuracy" in md and "chance" in md
    assert "| **seen avg** (1)" in md and "| fr_fr | no | 2 |" in md
    saved = json.loads(paths["json"].read_text())
    assert saved["config"] == {"eval": {"per_lang": 2}} and "jiwer" in saved["versions"]
    assert saved["tasks"]["asr"]["systems"]["oracle"]["averages"]["all"]["WER"] == 0.0
