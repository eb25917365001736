"""The FAISS text index: exact search against brute force, approximate recall, incremental add, atomic
versions on disk, and the refusals (other model, bad vectors, duplicate ids)."""

import json

import numpy as np
import pytest

from polyvox.index import IndexedText, TextIndex, ann_recall_at_k, model_fingerprint


def unit_vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def items(n: int, start: int = 0) -> list[IndexedText]:
    return [IndexedText(f"t{i}", f"text {i}", "fr_fr" if i % 2 else "de_de") for i in range(start, start + n)]


def test_exact_search_equals_brute_force() -> None:
    docs, queries = unit_vectors(300), unit_vectors(20, seed=1)
    index = TextIndex(16, "m")
    index.add(docs, items(300))
    hits = index.search(queries, k=10)
    sims = queries @ docs.T  # (Q, N)
    for q, row in enumerate(hits):
        best = np.argsort(-sims[q])[:10]
        assert [h.id for h in row] == [f"t{i}" for i in best]
        assert np.allclose([h.score for h in row], sims[q, best], atol=1e-5)
        assert row[0].text == f"text {best[0]}" and row[0].lang == ("fr_fr" if best[0] % 2 else "de_de")
    assert len(index.search(queries[:1], k=1000)[0]) == 300  # k larger than the index: everything, ranked


def test_incremental_add_equals_one_add_and_survives_save_load(tmp_path) -> None:
    docs, queries = unit_vectors(100), unit_vectors(5, seed=1)
    once = TextIndex(16, "m")
    once.add(docs, items(100))
    parts = TextIndex(16, "m")
    parts.add(docs[:60], items(60))
    first = parts.save(tmp_path / "idx")
    parts = TextIndex.load(tmp_path / "idx")
    parts.add(docs[60:], items(40, start=60))
    second = parts.save(tmp_path / "idx")
    assert not first.exists() and (tmp_path / "idx" / "current").read_text() == second.name
    loaded = TextIndex.load(tmp_path / "idx")
    assert len(loaded) == 100 and loaded.model_fingerprint == "m"
    assert loaded.search(queries, 5) == once.search(queries, 5)


def test_a_save_cut_short_leaves_the_last_version_whole(tmp_path) -> None:
    index = TextIndex(16, "m")
    index.add(unit_vectors(10), items(10))
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / ".tmp-crashed").mkdir()  # a save killed before its rename
    assert len(TextIndex.load(tmp_path / "idx")) == 10
    version = tmp_path / "idx" / (tmp_path / "idx" / "current").read_text()
    (version / "items.jsonl").write_text("")  # damaged by hand
    with pytest.raises(ValueError, match="the index is damaged"):
        TextIndex.load(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="no index in"):
        TextIndex.load(tmp_path / "empty")


@pytest.mark.parametrize(("kind", "params", "floor"), [("hnsw", {}, 0.9), ("ivf", {"nlist": 16, "nprobe": 16}, 1.0)])
def test_approximate_indexes_recall_against_exact(kind: str, params: dict, floor: float, tmp_path) -> None:
    docs, queries = unit_vectors(2000, 32), unit_vectors(50, 32, seed=1)
    exact, approx = TextIndex(32, "m"), TextIndex(32, "m", kind, params)
    exact.add(docs, items(2000))
    approx.add(docs, items(2000))
    approx = TextIndex.load(approx.save(tmp_path / kind).parent)
    assert approx.kind == kind and approx.params == params
    assert ann_recall_at_k(exact.search(queries, 10), approx.search(queries, 10), 10) >= floor


def test_refusals() -> None:
    index = TextIndex(16, "model-a")
    index.add(unit_vectors(4), items(4))
    with pytest.raises(ValueError, match="built with model model-a"):
        index.check_model("model-b")
    index.check_model("model-a")
    with pytest.raises(ValueError, match=r"ids already in the index \(or given twice\): \['t1'\]"):
        index.add(unit_vectors(1), items(1, start=1))
    with pytest.raises(ValueError, match=r"given twice\): \['t9'\]"):
        index.add(unit_vectors(2), [IndexedText("t9", "a", "fr_fr"), IndexedText("t9", "b", "fr_fr")])
    with pytest.raises(ValueError, match=r"expected vectors of shape \(N, 16\), got \(2, 8\)"):
        index.add(unit_vectors(2, 8), items(2, start=10))
    with pytest.raises(ValueError, match="NaN or infinity"):
        index.search(np.full((1, 16), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="2 vectors for 1 items"):
        index.add(unit_vectors(2), items(1, start=20))
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        TextIndex(16, "m", "lsh")
    with pytest.raises(ValueError, match="needs at least 16 vectors"):
        TextIndex(16, "m", "ivf", {"nlist": 16}).add(unit_vectors(4), items(4))
    assert len(index) == 4  # nothing was added by the refused calls


def test_recall_and_fingerprint(tmp_path) -> None:
    from polyvox.index import Hit

    exact = [[Hit("a", "", "", 1.0), Hit("b", "", "", 0.9)]]
    assert ann_recall_at_k(exact, [[Hit("b", "", "", 0.9), Hit("c", "", "", 0.8)]], 2) == 0.5
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "model.json").write_text(json.dumps({"kind": "x"}))
    fp = model_fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights2")
    assert model_fingerprint(tmp_path) != fp and len(fp) == 64


def test_mining_recovers_planted_pairs_and_margins_match_the_formula() -> None:
    from polyvox.index import mine_pairs

    x = unit_vectors(50, 16, seed=3)
    perm = np.random.default_rng(4).permutation(50)
    noise = 0.05 * np.random.default_rng(5).standard_normal((50, 16)).astype(np.float32)
    y = x[perm] + noise
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    pairs = mine_pairs(x, y, k=4, threshold=1.0)
    assert sorted((i, j) for i, j, _, _ in pairs) == sorted((int(perm[j]), j) for j in range(50))
    sims = x @ y.T  # brute force: the margin of every returned pair
    mean_x = np.sort(sims, axis=1)[:, -4:].mean(1)
    mean_y = np.sort(sims, axis=0)[-4:, :].mean(0)
    for i, j, margin, cos in pairs:
        assert cos == pytest.approx(sims[i, j], abs=1e-5)
        assert margin == pytest.approx(sims[i, j] / ((mean_x[i] + mean_y[j]) / 2), rel=1e-5)
    assert [m for _, _, m, _ in pairs] == sorted((m for _, _, m, _ in pairs), reverse=True)
    # a higher threshold keeps a prefix of the same ranking, every margin above it
    strict = mine_pairs(x, y, k=4, threshold=pairs[len(pairs) // 2][2])
    assert strict == pairs[: len(strict)] and 0 < len(strict) < len(pairs)
    assert mine_pairs(x[:0], y) == []


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_margin_search_matches_the_formula_and_demotes_hubs(kind: str) -> None:
    docs = unit_vectors(200, 16, seed=8)
    crowd = docs[0] + 0.5 * unit_vectors(30, 16, seed=9)
    docs[1:31] = crowd / np.linalg.norm(crowd, axis=1, keepdims=True)  # 30 items around t0: t0 is a hub
    query = docs[50] + 1.2 * docs[0]
    query = (query / np.linalg.norm(query))[None]
    index = TextIndex(16, "m", kind, {"nlist": 8, "nprobe": 8} if kind == "ivf" else {})
    index.add(docs, items(200))
    hits = index.search_margin(query, k=5, margin_k=4, candidates=200)[0]
    sims = docs @ docs.T
    np.fill_diagonal(sims, -np.inf)
    mean_y = np.sort(sims, axis=1)[:, -4:].mean(1)
    cos = (docs @ query[0])
    mean_x = np.sort(cos)[-4:].mean()
    margin = cos / ((mean_x + mean_y) / 2)
    if kind != "hnsw":  # exact neighbour lists: the ranking is the brute-force one
        assert [h.id for h in hits] == [f"t{i}" for i in np.argsort(-margin)[:5]]
    for h in hits:
        i = int(h.id[1:])
        assert h.cosine == pytest.approx(cos[i], abs=1e-5) and h.score == pytest.approx(margin[i], rel=1e-3)
    assert hits[0].id == "t50"  # the hub is the nearest by cosine, but not by margin
    assert index.search(query, 1)[0][0].id == "t0"


@pytest.mark.parametrize("kind, params", [("flat", {}), ("hnsw", {"m": 16, "ef_search": 300}),
                                          ("ivf", {"nlist": 4, "nprobe": 4})])
def test_a_language_filter_equals_brute_force_over_those_languages(kind: str, params: dict) -> None:
    x = unit_vectors(300)
    langs = ["fr_fr", "de_de", "en_us"]
    its = [IndexedText(str(i), f"t{i}", langs[i % 3]) for i in range(300)]
    index = TextIndex(16, "fp", kind, params)
    index.add(x, its)
    q = unit_vectors(6, seed=1)
    allowed = np.array([it.lang in {"de_de", "en_us"} for it in its])
    scores = q @ x.T
    scores[:, ~allowed] = -np.inf
    best = np.argsort(-scores, axis=1)[:, :7]
    hits = index.search(q, 7, {"de_de", "en_us"})
    assert [[h.id for h in row] for row in hits] == [[str(i) for i in b] for b in best]
    assert index.search(q, 3, {"xx_yy"}) == [[] for _ in range(6)]
    # margin search over one language: the full margin ranking restricted to it (same neighbourhoods)
    only = index.search_margin(q, 3, margin_k=4, candidates=300, langs={"fr_fr"})
    full = index.search_margin(q, 300, margin_k=4, candidates=300)
    for row, all_row in zip(only, full):
        assert [h.id for h in row] == [h.id for h in all_row if h.lang == "fr_fr"][:3]


def test_saves_survive_a_crash_at_any_point(tmp_path, monkeypatch) -> None:
    """A version folder a crash left before `current` named it, and a crashed save's temp folder, do not block
    the next save (they are passed over and removed); a save that fails removes its own temp folder."""
    folder = tmp_path / "ix"
    index = TextIndex(16, "m")
    index.add(unit_vectors(4), items(4))
    assert index.save(folder).name == "v-000001"
    (folder / "v-000002").mkdir()  # renamed into place, then the crash: `current` still names v-000001
    (folder / "v-000002" / "index.json").write_text("{}")
    (folder / ".tmp-crashed").mkdir()
    index.add(unit_vectors(2, seed=3), items(2, start=4))
    assert index.save(folder).name == "v-000003"
    assert sorted(p.name for p in folder.iterdir()) == ["current", "v-000003"]
    assert len(TextIndex.load(folder)) == 6

    import polyvox.index as ix

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ix._faiss(), "write_index", broken)
    with pytest.raises(OSError, match="disk full"):
        index.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["current", "v-000003"]
    assert len(TextIndex.load(folder)) == 6
