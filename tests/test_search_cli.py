"""`polyvox index build` and `polyvox search` on a tiny trained dual encoder: speech->text and text->text
queries ranked as brute force ranks them, incremental builds, and the refusals."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from polyvox.audio import load_audio
from polyvox.cli import main
from polyvox.index import TextIndex, embed_items, embed_speech, read_texts
from polyvox.models.dual_encoder import DualEncoder


@pytest.fixture
def trained(tiny_search) -> tuple[Path, Path]:
    return tiny_search.manifest, tiny_search.model


def hits_printed(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.strip().splitlines()]


def test_build_and_search_rank_like_brute_force(trained, tmp_path, capsys) -> None:
    manifest, model = trained
    idx = tmp_path / "idx"
    assert main(["index", "build", "--model", str(model), "--texts", str(manifest), "--out", str(idx)]) == 0
    assert f"24 texts in the flat index {idx}" in capsys.readouterr().out
    items = read_texts(manifest)
    dual = DualEncoder.load(model).eval()
    docs = embed_items(dual, items)

    # text -> text: an indexed text in its own language finds itself first, with cosine 1
    assert main(["search", "--index", str(idx), "--model", str(model), "--lang", items[3].lang,
                 "--text", items[3].text, "-k", "3"]) == 0
    rows = hits_printed(capsys.readouterr().out)
    assert len(rows) == 3 and rows[0][3] == items[3].id and float(rows[0][1]) == pytest.approx(1.0, abs=1e-4)

    # speech -> text: the printed ranking is the brute-force ranking of the same vectors
    clip = manifest.parent / "audio" / "fr_fr" / "001.flac"
    assert main(["search", "--index", str(idx), "--model", str(model), "--lang", "fr_fr", "--audio", str(clip),
                 "-k", "5"]) == 0
    rows = hits_printed(capsys.readouterr().out)
    q = embed_speech(dual, [load_audio(clip)], "fr_fr")[0]
    best = np.argsort(-(docs @ q))[:5]
    assert [r[3] for r in rows] == [items[i].id for i in best]
    assert np.allclose([float(r[1]) for r in rows], (docs @ q)[best], atol=1e-3)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    # no --model: the one the index recorded at build time
    assert main(["search", "--index", str(idx), "--lang", "fr_fr", "--audio", str(clip), "-k", "5"]) == 0
    assert hits_printed(capsys.readouterr().out) == rows
    moved = TextIndex.load(idx)
    moved.model_path = str(tmp_path / "gone")
    moved.save(tmp_path / "moved")
    assert main(["search", "--index", str(tmp_path / "moved"), "--lang", "fr_fr", "--text", "red"]) == 2
    assert "pass the model folder (--model)" in capsys.readouterr().err
    # no --lang: the clip's language is detected, and the ranking is the one in that language
    assert main(["search", "--index", str(idx), "--model", str(model), "--audio", str(clip), "-k", "5"]) == 0
    out = capsys.readouterr()
    detected = out.err.split("detected language: ")[1].split("(")[1].split(")")[0]
    assert [r[3] for r in hits_printed(out.out)] == [items[i].id for i in
                                                   np.argsort(-(docs @ embed_speech(dual, [load_audio(clip)], detected)[0]))[:5]]

    # only hits in one language
    assert main(["search", "--index", str(idx), "--model", str(model), "--lang", "fr_fr", "--audio", str(clip),
                 "-k", "3", "--result-langs", "pl_pl"]) == 0
    rows = hits_printed(capsys.readouterr().out)
    assert [r[3] for r in rows] == [h.id for h in TextIndex.load(idx).search(q[None], 3, {"pl_pl"})[0]]
    assert {r[2] for r in rows} == {"pl_pl"}

    # margin re-ranking: the printed scores are the index's margins
    assert main(["search", "--index", str(idx), "--model", str(model), "--lang", "fr_fr", "--audio", str(clip),
                 "-k", "5", "--margin", "3"]) == 0
    rows = hits_printed(capsys.readouterr().out)
    expected = TextIndex.load(idx).search_margin(q[None], 5, 3)[0]
    assert [r[3] for r in rows] == [h.id for h in expected]
    assert np.allclose([float(r[1]) for r in rows], [h.score for h in expected], atol=1e-3)


def test_incremental_build_and_refusals(trained, tmp_path, capsys) -> None:
    manifest, model = trained
    idx = tmp_path / "idx"
    more = tmp_path / "more.txt"
    more.write_text("red cat\n\nblue dog\n")
    args = ["index", "build", "--model", str(model), "--out", str(idx)]
    assert main([*args, "--texts", str(manifest), "--kind", "hnsw", "--param", "m=8"]) == 0
    assert main([*args, "--texts", str(more), "--lang", "en_us"]) == 0  # adds the two new texts
    index = TextIndex.load(idx)
    assert len(index) == 26 and index.kind == "hnsw" and index.items[-1].id == "more.txt:3"
    assert main([*args, "--texts", str(more), "--lang", "en_us"]) == 0  # nothing new
    assert len(TextIndex.load(idx)) == 26
    capsys.readouterr()

    # another model (other weights) may not query or extend it
    other = tmp_path / "other"
    shutil.copytree(model, other)
    (other / "model.json").write_text((other / "model.json").read_text().replace("{", '{"note": "other", ', 1))
    assert main(["search", "--index", str(idx), "--model", str(other), "--lang", "fr_fr", "--text", "x"]) == 2
    assert "this index was built with model" in capsys.readouterr().err
    assert main([*args[:3], str(other), "--out", str(idx), "--texts", str(more), "--lang", "en_us"]) == 2
    assert "this index was built with model" in capsys.readouterr().err

    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert main(["search", "--index", str(idx), "--model", str(model), "--lang", "fr_fr", "--audio", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert str(garbage) in err and "Traceback" not in err
    assert main(["search", "--index", str(idx), "--model", str(model), "--text", "red cat"]) == 2
    assert "a text query needs its language (--lang)" in capsys.readouterr().err
    assert main([*args, "--texts", str(more)]) == 2
    assert "needs a language (--lang)" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "none"), "--model", str(model), "--lang", "fr_fr", "--text", "a"]) == 2
    assert "no index in" in capsys.readouterr().err


def test_mine_speech_to_text_and_text_to_text(trained, tmp_path, capsys) -> None:
    manifest, model = trained
    out = tmp_path / "pairs.tsv"
    assert main(["mine", "--model", str(model), "--src", str(manifest), "--src-speech", "--tgt", str(manifest),
                 "--threshold", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["margin", "cosine", "source_id", "target_id", "source", "target"]
    assert f"{len(rows) - 1} pairs (margin >= 0) of 24 sources and 24 targets" in printed and len(rows) > 1
    margins = [float(r[0]) for r in rows[1:]]
    assert margins == sorted(margins, reverse=True)
    # each item is paired at most once (an item whose k candidates were all taken stays unpaired)
    assert len({r[2] for r in rows[1:]}) == len({r[3] for r in rows[1:]}) == len(rows) - 1

    # text <-> text: a collection against itself pairs every text with itself
    texts = tmp_path / "t.txt"
    texts.write_text("red cat sun\nblue dog moon\ngreen tree fish\nstone bird river\n")
    assert main(["mine", "--model", str(model), "--src", str(texts), "--src-lang", "fr_fr", "--tgt", str(texts),
                 "--tgt-lang", "fr_fr", "--out", str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert len(rows) == 4 and all(r[2] == r[3] and float(r[1]) == pytest.approx(1.0, abs=1e-4) for r in rows)
