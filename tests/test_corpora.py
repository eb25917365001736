"""Importing FLEURS, CoVoST 2, Common Voice and plain folders as manifests, on tiny generated corpora."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polyvox.audio import SAMPLE_RATE, load_audio
from polyvox.data.manifest import read_manifest
from polyvox.data.sources.corpora import CorpusError, corpus_lang, import_corpus
from polyvox.data.sources.text import group_id
from polyvox.eval.retrieval import evaluate_retrieval

SR = 22_050  # sources are not 16 kHz: the import must resample


def tone(freq: float, seconds: float = 0.25, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wav = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def audio_bytes(freq: float, fmt: str = "WAV", seconds: float = 0.25) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(freq, seconds), SR, format=fmt)
    return buf.getvalue()


def write_tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def info(out: Path) -> dict:
    return json.loads((out / "import.json").read_text(encoding="utf-8"))


def by_id(manifest: Path) -> dict:
    return {u.id: u for u in read_manifest(manifest)}


# ----------------------------------------------------------------------------- FLEURS, released layout


def make_fleurs(root: Path) -> Path:
    """fr_fr/test: sentence 100 read twice, 200 once, one empty text, one file missing from the tar
    (audio in test.tar.gz); de_de/test: sentence 100 once (audio extracted in audio/test/)."""
    fr = root / "data" / "fr_fr"
    write_tsv(fr / "test.tsv", [
        ["100", "a.wav", "Le chat dort.", "le chat dort", "l e|c h a t", "4000", "FEMALE"],
        ["200", "c.wav", "Il pleut.", "il pleut", "i l", "4000", "MALE"],
        ["100", "b.wav", "Le chat dort.", "le chat dort", "l e|c h a t", "4000", "MALE"],
        ["300", "d.wav", "  ", "", "", "4000", "MALE"],
        ["400", "gone.wav", "Absent.", "absent", "", "4000", "MALE"],
    ])
    (fr / "audio").mkdir(parents=True)
    with tarfile.open(fr / "audio" / "test.tar.gz", "w:gz") as tar:
        for name, freq in (("a.wav", 300), ("b.wav", 400), ("c.wav", 500), ("d.wav", 600)):
            data = audio_bytes(freq)
            member = tarfile.TarInfo(f"test/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    de = root / "data" / "de_de"
    write_tsv(de / "test.tsv", [["100", "x.wav", "Die Katze schläft.", "die katze schläft", "", "4000", "OTHER"]])
    (de / "audio" / "test").mkdir(parents=True)
    sf.write(de / "audio" / "test" / "x.wav", tone(700, channels=2), SR)  # stereo: mixed to mono
    return root


def test_fleurs_released_layout_keeps_recordings_distinct_with_shared_group(tmp_path: Path) -> None:
    src = make_fleurs(tmp_path / "fleurs")
    manifest = import_corpus("fleurs", src, tmp_path / "out", num_workers=1, progress=False)
    utts = by_id(manifest)
    assert sorted(utts) == ["de_de/test/100-0", "fr_fr/test/100-0", "fr_fr/test/100-1", "fr_fr/test/200-0"]
    first, second = utts["fr_fr/test/100-0"], utts["fr_fr/test/100-1"]
    assert first.text == second.text == "Le chat dort."  # raw transcription
    assert first.group == second.group == utts["de_de/test/100-0"].group == "fleurs-100"
    assert first.meta == {"source": "fleurs", "recording": 0, "gender": "female", "file": "a.wav",
                          "normalized": "le chat dort"}
    assert second.meta["recording"] == 1 and second.meta["file"] == "b.wav"
    assert utts["de_de/test/100-0"].meta["gender"] == "other"
    for u in utts.values():
        assert u.split == "test" and u.audio == f"audio/{u.id}.flac"
        wav = load_audio(tmp_path / "out" / u.audio)
        assert u.duration == pytest.approx(0.25, abs=1e-3) and wav.shape == (4000,)
        assert sf.info(tmp_path / "out" / u.audio).samplerate == SAMPLE_RATE
    # the two recordings are different clips
    a, b = (load_audio(tmp_path / "out" / u.audio) for u in (first, second))
    assert not np.allclose(a, b)
    report = info(tmp_path / "out")
    tsv = str(src / "data" / "fr_fr" / "test.tsv")
    assert report["counts"] == {"de_de": {"test": 1}, "fr_fr": {"test": 3}}
    assert report["skipped"] == [
        {"where": f"{tsv}:4", "reason": "empty text"},
        {"where": f"{tsv}:5", "reason": f"audio 'gone.wav' not found in {src / 'data/fr_fr/audio/test.tar.gz'}"},
    ]
    assert report["kind"] == "fleurs" and report["source"] == str(src) and "soundfile" in report["versions"]
    import hashlib

    assert report["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()


def test_fleurs_filters_languages_splits_and_limit(tmp_path: Path) -> None:
    src = make_fleurs(tmp_path / "fleurs")
    manifest = import_corpus("fleurs", src, tmp_path / "out", langs=["fr_fr"], limit=2, num_workers=1,
                             progress=False)
    assert sorted(by_id(manifest)) == ["fr_fr/test/100-0", "fr_fr/test/200-0"]
    # one language's folder as the root; a split that is not there is a clear error
    manifest = import_corpus("fleurs", src / "data" / "de_de", tmp_path / "out2", progress=False)
    assert list(by_id(manifest)) == ["de_de/test/100-0"]
    with pytest.raises(CorpusError, match=r"FLEURS table not found: .*de_de/dev\.tsv"):
        import_corpus("fleurs", src, tmp_path / "out3", splits=["validation"], progress=False)


def test_rerun_is_byte_identical_and_does_not_reconvert(tmp_path: Path) -> None:
    src, out = make_fleurs(tmp_path / "fleurs"), tmp_path / "out"
    manifest = import_corpus("fleurs", src, out, num_workers=1, progress=False)
    first = manifest.read_bytes()
    flacs = sorted(out.rglob("*.flac"))
    stamps = [p.stat().st_mtime_ns for p in flacs]
    assert info(out)["converted"] == 4 and info(out)["reused"] == 0
    import_corpus("fleurs", src, out, num_workers=1, progress=False)
    assert manifest.read_bytes() == first
    assert [p.stat().st_mtime_ns for p in flacs] == stamps
    assert info(out)["converted"] == 0 and info(out)["reused"] == 4
    # a deleted clip is converted again, and only that one
    flacs[0].unlink()
    import_corpus("fleurs", src, out, num_workers=1, progress=False)
    assert info(out)["converted"] == 1 and manifest.read_bytes() == first


# ----------------------------------------------------------------------------- Hugging Face layouts


def test_fleurs_hf_arrow_layout(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    folder = tmp_path / "hf" / "validation"
    folder.mkdir(parents=True)
    names = ["de_de", "fr_fr"]  # the lang_id class labels
    (folder / "dataset_info.json").write_text(json.dumps({"features": {
        "lang_id": {"names": names, "_type": "ClassLabel"},
        "gender": {"names": ["male", "female", "other"], "_type": "ClassLabel"}}}))
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "id": pa.array([7, 7, 9], pa.int32()),
        "path": ["/elsewhere/p.wav", "/elsewhere/q.wav", "/elsewhere/r.wav"],
        "audio": pa.array([{"bytes": audio_bytes(300), "path": "p.wav"},
                           {"bytes": audio_bytes(400, "FLAC"), "path": "q.wav"},
                           {"bytes": b"not audio", "path": "r.wav"}], audio),
        "transcription": ["bonjour", "bonjour", "salut"],
        "raw_transcription": ["Bonjour !", "Bonjour !", "Salut."],
        "gender": [1, 0, 0],
        "lang_id": [1, 1, 1],
        "language": ["", "", ""],  # left empty: the language must come from lang_id's class names
    })
    with pa.ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
        writer.write_table(table)
    out = tmp_path / "out"
    utts = by_id(import_corpus("fleurs", tmp_path / "hf", out, num_workers=1, progress=False))
    assert sorted(utts) == ["fr_fr/dev/7-0", "fr_fr/dev/7-1"]
    assert utts["fr_fr/dev/7-0"].meta["gender"] == "female" and utts["fr_fr/dev/7-1"].meta["file"] == "q.wav"
    assert {u.group for u in utts.values()} == {"fleurs-7"} and utts["fr_fr/dev/7-0"].text == "Bonjour !"
    [bad] = info(out)["skipped"]
    assert bad["where"].endswith("data-00000-of-00001.arrow row 2") and "cannot decode audio" in bad["reason"]


def test_covost2_hf_parquet_layout(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "covost" / "de_en"
    folder.mkdir(parents=True)
    table = pa.table({
        "client_id": ["s1", "s2"],
        "file": ["clips/common_voice_de_1.mp3", "clips/common_voice_de_2.mp3"],
        "audio": [{"array": tone(300, sr=16_000).tolist(), "sampling_rate": 16_000},
                  {"bytes": audio_bytes(500), "path": None}],
        "sentence": ["Guten Morgen.", "Gute Nacht."],
        "translation": ["Good morning.", "Good night."],
        "id": ["common_voice_de_1", "common_voice_de_2"],
    })
    pq.write_table(table, folder / "test-00000-of-00001.parquet")
    utts = by_id(import_corpus("covost2", tmp_path / "covost", tmp_path / "out", num_workers=1, progress=False))
    assert sorted(utts) == ["de_de/test/common_voice_de_1", "de_de/test/common_voice_de_2"]
    u = utts["de_de/test/common_voice_de_1"]
    assert u.translations == {"en_us": "Good morning."} and u.meta["speaker"] == "s1"
    assert u.duration == pytest.approx(0.25, abs=1e-3)


def test_missing_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hf" / "test").mkdir(parents=True)
    (tmp_path / "hf" / "test" / "data.arrow").write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"pip install 'polyvox\[corpora\]'"):
        import_corpus("fleurs", tmp_path / "hf", tmp_path / "out", progress=False)


# ----------------------------------------------------------------------------- CoVoST 2 and Common Voice


def make_covost(root: Path) -> Path:
    clips = root / "clips"
    clips.mkdir(parents=True)
    for i, freq in enumerate((300, 350, 400, 450)):
        sf.write(clips / f"common_voice_fr_{i}.mp3", tone(freq), SR, format="WAV")  # content decides the format
    header = ["path", "sentence", "translation", "client_id", "split"]
    write_tsv(root / "covost_v2.fr_en.tsv", [
        header,
        ["common_voice_fr_0.mp3", "Bonjour.", "Hello.", "spk0", "train"],
        ["common_voice_fr_1.mp3", "Merci.", "Thanks.", "spk1", "train_covost"],
        ["common_voice_fr_2.mp3", "Oui.", "Yes.", "spk2", "dev"],
        ["common_voice_fr_3.mp3", "Non.", "No.", "spk3", "test"],
        ["common_voice_fr_9.mp3", "Absent.", "Missing.", "spk3", "test"],
        ["common_voice_fr_3.mp3", "Non.", "No.", "spk3", "bogus"],
    ])
    return root


def test_covost2_released_tsv(tmp_path: Path) -> None:
    src, out = make_covost(tmp_path / "covost"), tmp_path / "out"
    utts = by_id(import_corpus("covost2", src, out, num_workers=1, progress=False))
    assert sorted(utts) == ["fr_fr/dev/common_voice_fr_2", "fr_fr/test/common_voice_fr_3",
                            "fr_fr/train/common_voice_fr_0", "fr_fr/train/common_voice_fr_1"]
    u = utts["fr_fr/train/common_voice_fr_1"]
    assert u.translations == {"en_us": "Thanks."} and u.text == "Merci." and u.lang == "fr_fr"
    assert u.meta == {"source": "covost2", "file": "common_voice_fr_1.mp3", "speaker": "spk1",
                      "covost_split": "train_covost"}
    assert u.group == group_id("Merci.", "cv")
    reasons = {s["where"].rsplit(":", 1)[1]: s["reason"] for s in info(out)["skipped"]}
    assert reasons == {"6": f"audio file not found: {src / 'clips' / 'common_voice_fr_9.mp3'}",
                       "7": "unknown split 'bogus'"}


def test_covost2_per_split_table_and_language_mapping(tmp_path: Path) -> None:
    src = tmp_path / "covost"
    (src / "clips").mkdir(parents=True)
    sf.write(src / "clips" / "c.mp3", tone(300), SR, format="WAV")
    write_tsv(src / "covost_v2.zh-CN_en.test.tsv", [["path", "sentence", "translation", "client_id"],
                                                    ["c.mp3", "你好。", "Hello.", "s"]])
    [u] = read_manifest(import_corpus("covost2", src, tmp_path / "out", progress=False))
    assert (u.id, u.lang, u.split, u.translations) == ("cmn_hans_cn/test/c", "cmn_hans_cn", "test", {"en_us": "Hello."})
    # an unmappable source language is an error naming the table; lang= overrides it
    (src / "covost_v2.zh-CN_en.test.tsv").rename(src / "covost_v2.xx_en.test.tsv")
    with pytest.raises(CorpusError, match=r"covost_v2\.xx_en\.test\.tsv: unknown language 'xx'"):
        import_corpus("covost2", src, tmp_path / "out", progress=False)
    [u] = read_manifest(import_corpus("covost2", src, tmp_path / "out", lang="ja_jp", progress=False))
    assert u.lang == "ja_jp"


def make_commonvoice(root: Path) -> Path:
    sv = root / "sv-SE"
    (sv / "clips").mkdir(parents=True)
    for i in range(4):
        sf.write(sv / "clips" / f"cv_{i}.mp3", tone(300 + 50 * i), SR, format="WAV")
    cols = ["client_id", "path", "sentence_id", "sentence", "up_votes", "down_votes", "age", "gender", "accents",
            "locale", "segment"]
    write_tsv(sv / "train.tsv", [cols,
                                 ["alice", "cv_0.mp3", "s1", "Hej då.", "2", "0", "twenties", "female", "", "sv-SE", ""],
                                 ["bob", "cv_1.mp3", "s1", "Hej då.", "2", "0", "", "", "", "sv-SE", ""]])
    write_tsv(sv / "test.tsv", [cols[:2] + cols[3:],
                                ["carl", "cv_2.mp3", "God  morgon", "2", "0", "", "male", "", "sv-SE", ""],
                                ["dana", "cv_3.mp3", "god morgon.", "2", "0", "", "", "", "sv-SE", ""],
                                ["erik", "cv_9.mp3", "", "2", "0", "", "", "", "sv-SE", ""]])
    return root


def test_commonvoice_speakers_of_one_sentence_share_a_group(tmp_path: Path) -> None:
    root, out = make_commonvoice(tmp_path / "cv"), tmp_path / "out"
    utts = by_id(import_corpus("commonvoice", root, out, num_workers=1, progress=False))
    assert sorted(utts) == ["sv_se/test/cv_2", "sv_se/test/cv_3", "sv_se/train/cv_0", "sv_se/train/cv_1"]
    a, b = utts["sv_se/train/cv_0"], utts["sv_se/train/cv_1"]
    assert a.group == b.group == "cv-s1" and (a.meta["speaker"], b.meta["speaker"]) == ("alice", "bob")
    assert a.meta["gender"] == "female" and "gender" not in b.meta
    # without sentence ids, the normalised sentence decides (case, spacing, final punctuation)
    assert utts["sv_se/test/cv_2"].group == utts["sv_se/test/cv_3"].group == group_id("god morgon", "cv")
    assert info(out)["skipped"] == [{"where": f"{root / 'sv-SE' / 'test.tsv'}:4", "reason": "empty text"}]
    # the locale folder itself as the root
    assert len(read_manifest(import_corpus("commonvoice", root / "sv-SE", tmp_path / "o2", progress=False))) == 4


def test_commonvoice_unknown_locale_and_missing_table(tmp_path: Path) -> None:
    root = make_commonvoice(tmp_path / "cv")
    (root / "eo" / "clips").mkdir(parents=True)
    with pytest.raises(CorpusError, match=r"cv/eo: unknown language 'eo'"):
        import_corpus("commonvoice", root, tmp_path / "out", progress=False)
    # naming the wanted languages passes over the unmappable folder
    assert len(read_manifest(import_corpus("commonvoice", root, tmp_path / "out", langs=["sv_se"],
                                           progress=False))) == 4
    with pytest.raises(CorpusError, match=r"table\(s\) not found: .*sv-SE/dev\.tsv"):
        import_corpus("commonvoice", root / "sv-SE", tmp_path / "out", splits=["dev"], progress=False)


# ----------------------------------------------------------------------------- plain folder


def make_folder(root: Path, n: int = 10, ext: str = "csv") -> Path:
    root.mkdir(parents=True)
    sep = "," if ext == "csv" else "\t"
    lines = [sep.join(["path", "text", "lang", "translation", "split", "speaker"])]
    for i in range(n):
        sub = "a" if i % 2 else "b"
        (root / sub).mkdir(exist_ok=True)
        sf.write(root / sub / f"clip{i}.flac", tone(200 + 40 * i), SR)
        lines.append(sep.join([f"{sub}/clip{i}.flac", f"phrase {i}", "pl", f"Satz {i}", "" if i % 3 else "train",
                               f"spk{i % 2}"]))
    (root / f"table.{ext}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_folder_csv_with_translations_default_split_and_parallel_workers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = make_folder(tmp_path / "mine")
    one = import_corpus("folder", src, tmp_path / "one", translation_lang="de_de", num_workers=1, progress=False)
    two = import_corpus("folder", src, tmp_path / "two", translation_lang="de_de", num_workers=2, progress=False)
    assert one.read_bytes() == two.read_bytes()  # process pool or not, the same manifest
    assert "worker processes failed" not in caplog.text
    utts = by_id(one)
    assert len(utts) == 10
    u = utts["pl_pl/test/a/clip1"]
    assert (u.text, u.translations, u.meta["speaker"], u.group) == ("phrase 1", {"de_de": "Satz 1"}, "spk1", None)
    assert utts["pl_pl/train/b/clip0"].split == "train"
    assert info(tmp_path / "two")["counts"] == {"pl_pl": {"test": 6, "train": 4}}


def test_folder_bad_rows_are_skipped_and_unknown_language_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "mine"
    src.mkdir()
    sf.write(src / "ok.wav", tone(300), SR)
    sf.write(src / "silent.wav", np.zeros(0, np.float32), SR)
    (src / "broken.wav").write_bytes(b"RIFF not really")
    write_tsv(src / "t.tsv", [["path", "text", "lang"], ["ok.wav", "Hei", "fi"], ["missing.wav", "Moi", "fi"],
                              ["silent.wav", "Moi", "fi"], ["broken.wav", "Moi", "fi"], ["ok.wav", "", "fi"]])
    out = tmp_path / "out"
    [u] = read_manifest(import_corpus("folder", src, out, progress=False))
    assert (u.id, u.lang, u.split) == ("fi_fi/test/ok", "fi_fi", "test")
    skipped = {s["where"].rsplit(":", 1)[1]: s["reason"] for s in info(out)["skipped"]}
    assert skipped["3"] == f"audio file not found: {src / 'missing.wav'}"
    assert "audio is empty" in skipped["4"] and "cannot decode" in skipped["5"] and skipped["6"] == "empty text"
    write_tsv(src / "t.tsv", [["path", "text", "lang"], ["ok.wav", "Hei", "fi"], ["ok.wav", "Hei", "klingon"]])
    with pytest.raises(CorpusError, match=r"t\.tsv:3: unknown language 'klingon'"):
        import_corpus("folder", src, out, progress=False)
    # lang= overrides the column (and validates the code)
    assert read_manifest(import_corpus("folder", src / "t.tsv", out, lang="et_ee", progress=False))[0].lang == "et_ee"
    with pytest.raises(ValueError, match="unknown language code 'et'"):
        import_corpus("folder", src, out, lang="et", progress=False)


def test_layout_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="known kinds: commonvoice, covost2, fleurs, folder"):
        import_corpus("librispeech", tmp_path, tmp_path / "out")
    with pytest.raises(CorpusError, match="no .tsv or .csv table"):
        import_corpus("folder", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(CorpusError, match="no FLEURS language folder"):
        import_corpus("fleurs", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(CorpusError, match="no covost_v2"):
        import_corpus("covost2", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="corpus source not found"):
        import_corpus("fleurs", tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "empty" / "t.csv").write_text("file,text\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"t\.csv:1: missing column\(s\) path, lang"):
        import_corpus("folder", tmp_path / "empty", tmp_path / "out", progress=False)


@pytest.mark.parametrize(("name", "code"), [
    ("fr", "fr_fr"), ("zh-CN", "cmn_hans_cn"), ("sv-SE", "sv_se"), ("pt", "pt_br"), ("es", "es_419"),
    ("cmn_hans_cn", "cmn_hans_cn"), ("en", "en_us"), ("ga-IE", "ga_ie"), ("pa-IN", "pa_in"), ("zh-HK", "yue_hant_hk"),
    ("es-419", "es_419"), ("pt-PT", None), ("zh-TW", None), ("nn-NO", None), ("eo", None), ("", None),
])  # fmt: skip
def test_corpus_lang(name: str, code: str | None) -> None:
    assert corpus_lang(name) == code


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile cannot write MP3")
def test_mp3_clip_is_converted(tmp_path: Path) -> None:
    src = tmp_path / "mp3"
    src.mkdir()
    sf.write(src / "x.mp3", tone(440, 0.5), SR, format="MP3")
    write_tsv(src / "t.tsv", [["path", "text", "lang"], ["x.mp3", "Hola", "es"]])
    [u] = read_manifest(import_corpus("folder", src, tmp_path / "out", progress=False))
    assert u.lang == "es_419" and u.duration == pytest.approx(0.5, abs=0.08)  # mp3 adds encoder padding


# ----------------------------------------------------------------------------- evaluation with duplicates


class OracleModel:
    """Speech units are [sentence index]; texts map to the one-hot of their sentence."""

    def __init__(self, sentences: list[str]) -> None:
        self.index = {s: i for i, s in enumerate(sentences)}

    def eval(self) -> OracleModel:
        return self

    def encode_speech(self, unit_lists: list[list[int]], langs: list[str]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor([u[0] for u in unit_lists]), len(self.index)).float()

    def encode_text(self, texts: list[str], langs: list[str]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor([self.index[t] for t in texts]), len(self.index)).float()


def test_duplicate_recordings_are_not_counted_as_wrong_matches(tmp_path: Path) -> None:
    utts = read_manifest(import_corpus("fleurs", make_fleurs(tmp_path / "f"), tmp_path / "out", langs=["fr_fr"],
                                       progress=False))
    sentences = sorted({u.text for u in utts})
    assert len(utts) == 3 and len(sentences) == 2  # two recordings of "Le chat dort."
    model = OracleModel(sentences)
    units = {u.id: [model.index[u.text]] for u in utts}
    row = evaluate_retrieval(model, utts, units, seen={"fr_fr"}, ks=(1,))["languages"]["fr_fr"]
    assert row["n"] == 3 and row["candidates"] == 2 and row["R@1"] == 1.0


def test_cli_imports_a_folder_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from polyvox.cli import main

    src = make_folder(tmp_path / "mine", n=4, ext="tsv")
    out = tmp_path / "out"
    assert main(["data", "import", "folder", str(src), "--out", str(out), "--splits", "test", "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "manifest.jsonl")
    assert sorted(by_id(out / "manifest.jsonl")) == ["pl_pl/test/a/clip1", "pl_pl/test/b/clip2"]
    assert main(["data", "import", "folder", str(src), "--out", str(out), "--lang", "klingon"]) == 2
    assert "unknown language code 'klingon'" in capsys.readouterr().err


def test_report_on_an_imported_corpus(tmp_path: Path) -> None:
    from polyvox.eval.corpus_report import corpus_report

    src = make_folder(tmp_path / "mine", n=6)
    out = tmp_path / "out"
    import_corpus("folder", src, out, num_workers=1, progress=False)
    report = corpus_report(out, samples_per_lang=0, asr_model=None)
    assert report["manifests"]["manifest.jsonl"]["languages"]["pl_pl"]["train"] == 2
    assert report["manifests"]["manifest.jsonl"]["languages"]["pl_pl"]["test"] == 4
    assert "tts" not in report  # nothing here was synthesised
