import json

import pytest

from polyvox.data.languages import UnknownLanguageError, check_lang
from polyvox.data.manifest import ManifestError, Utterance, read_manifest, write_manifest


def test_round_trip(tmp_path):
    utts = [Utterance(id="fr_fr/1", audio="audio/1.flac", text="Le fichier est introuvable.", lang="fr_fr",
                      split="test", duration=2.4, translations={"en_us": "The file cannot be found."}, group="g1")]
    path = write_manifest(tmp_path / "m.jsonl", utts)
    assert read_manifest(path) == utts
    with pytest.raises(ManifestError, match="no utterances in split 'train'; its splits: test"):
        read_manifest(path, split="train")  # an absent split is a mistake, said so (not an empty list)
    assert read_manifest(path, split="test", langs=["de_de"]) == []  # a split without these languages is not
    assert utts[0].audio_path(tmp_path) == tmp_path / "audio/1.flac"


@pytest.mark.parametrize("row, message", [
    ({"id": "a", "text": "hello there", "lang": "xx_yy"}, "unknown language code 'xx_yy'"),
    ({"id": "a", "text": "   ", "lang": "fr_fr"}, "empty text"),
    ({"id": "a", "lang": "fr_fr"}, "missing field"),
    ({"id": "a", "text": "x", "lang": "fr_fr", "colour": 1}, "unknown field"),
    ({"id": "a", "text": "x", "lang": "fr_fr", "duration": float("nan")}, "finite"),
])
def test_bad_lines_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "m.jsonl"
    good = {"id": "ok", "text": "fine", "lang": "de_de"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ManifestError, match=message) as e:
        read_manifest(path)
    assert f"{path}:2" in str(e.value)


def test_not_json_and_duplicates(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "text": "x", "lang": "fr_fr"}\n{oops\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(path)
    path.write_text('{"id": "a", "text": "x", "lang": "fr_fr"}\n' * 2)
    with pytest.raises(ManifestError, match="duplicate id"):
        read_manifest(path)


def test_check_lang_hint():
    assert check_lang("cmn_hans_cn") == "cmn_hans_cn"
    with pytest.raises(UnknownLanguageError, match="did you mean fr_fr"):
        check_lang("fr")


def test_split_counts_and_speech_hours_by_hand() -> None:
    from polyvox.data.manifest import speech_hours, split_counts

    utts = [Utterance(id=str(i), audio=None, text="x", lang=lang, split=split, duration=d)
            for i, (lang, split, d) in enumerate([("fr_fr", "test", 1800.0), ("de_de", "train", 360.0),
                                                  ("fr_fr", "train", None), ("fr_fr", "test", 1800.0)])]
    assert split_counts(utts) == {"de_de": {"train": 1}, "fr_fr": {"test": 2, "train": 1}}
    assert list(split_counts(utts)) == ["de_de", "fr_fr"]
    assert speech_hours(utts) == {"de_de": 0.1, "fr_fr": 1.0}
