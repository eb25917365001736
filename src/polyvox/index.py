"""A FAISS-backed index of embedded texts: add, search, save, load.

Vectors are L2-normalised embeddings, so the inner product is the cosine similarity. ``flat`` search is
exact; ``hnsw`` and ``ivf`` are approximate indexes for large collections. The index records the fingerprint
of the model that made its vectors and refuses queries from any other model.

On disk a folder holds versions ``v-000001/`` … (``index.faiss``, ``items.jsonl``, ``index.json``) and a
``current`` pointer replaced atomically, so a save interrupted at any moment leaves the previous version whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from polyvox.data.languages import check_lang
from polyvox.data.manifest import read_manifest
from polyvox.fileio import atomic_write_text, sha256_file, temp_dir
from polyvox.models.dual_encoder import DualEncoder
from polyvox.models.units import encoder_for_units
from polyvox.progress import Progress


@dataclass(frozen=True)
class IndexedText:
    """One indexed text."""

    id: str
    text: str
    lang: str


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    text: str
    lang: str
    score: float
    """Cosine similarity to the query, or its margin when the search asked for margin scoring."""
    cosine: float | None = None
    """With margin scoring: the cosine similarity itself."""


def _faiss():
    try:
        import faiss
    except ImportError as e:  # a core dependency, but say what to do if it is missing
        raise ImportError("polyvox.index needs faiss: pip install faiss-cpu") from e
    return faiss


def _flat(dim: int, params: dict):
    return _faiss().IndexFlatIP(dim)


def _hnsw(dim: int, params: dict):
    faiss = _faiss()
    index = faiss.IndexHNSWFlat(dim, int(params.get("m", 32)), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(params.get("ef_construction", 80))
    index.hnsw.efSearch = int(params.get("ef_search", 64))
    return index


def _ivf(dim: int, params: dict):
    faiss = _faiss()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, int(params.get("nlist", 256)), faiss.METRIC_INNER_PRODUCT)
    index.nprobe = int(params.get("nprobe", 16))
    return index


INDEX_KINDS: dict[str, Callable] = {"flat": _flat, "hnsw": _hnsw, "ivf": _ivf}
"""Index kind -> builder(dim, params). ``ivf`` is trained on the first vectors added (at least ``nlist``)."""


class TextIndex:
    """Embedded texts with their ids and languages, searchable by cosine similarity.

    Args:
        dim: embedding size.
        model_fingerprint: identity of the model whose vectors go in (see `polyvox.index.model_fingerprint`).
        kind: a key of `INDEX_KINDS`.
        params: the kind's parameters (hnsw: m, ef_construction, ef_search; ivf: nlist, nprobe).
    """

    def __init__(self, dim: int, model_fingerprint: str, kind: str = "flat", params: dict | None = None):
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; known: {', '.join(INDEX_KINDS)}")
        self.dim, self.model_fingerprint, self.kind, self.params = dim, model_fingerprint, kind, dict(params or {})
        self.model_path: str | None = None  # where the model was when the index was built (a default for queries)
        self.index = INDEX_KINDS[kind](dim, self.params)
        self.items: list[IndexedText] = []
        self._pos: dict[str, int] = {}  # id -> position (the faiss id)
        self._by_lang: dict[str, np.ndarray] | None = None  # language -> positions, made when first filtered

    def __len__(self) -> int:
        return len(self.items)

    def languages(self) -> dict[str, int]:
        """Number of items per language, most first."""
        return dict(Counter(it.lang for it in self.items).most_common())

    def model_dir(self, model: str | Path | None = None) -> Path:
        """`model`, or the model folder recorded when the index was built."""
        if model is not None:
            return Path(model)
        if self.model_path is None or not Path(self.model_path).exists():
            raise FileNotFoundError(f"the index does not say where its model is, or it moved ({self.model_path}); "
                                    "pass the model folder (--model)")
        return Path(self.model_path)

    def check_model(self, fingerprint: str) -> None:
        """Refuse vectors of a model other than the one the index was built with."""
        if fingerprint != self.model_fingerprint:
            raise ValueError(f"this index was built with model {self.model_fingerprint[:12]}…, not {fingerprint[:12]}…; "
                             "query it with the same checkpoint, or build a new index")

    def _vectors(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (N, {self.dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        return x

    def add(self, vectors: np.ndarray, items: list[IndexedText]) -> None:
        """Append (N, D) vectors and their items; ids must be new."""
        x = self._vectors(vectors)
        if len(x) != len(items):
            raise ValueError(f"{len(x)} vectors for {len(items)} items")
        pos, clash = dict(self._pos), set()
        for it in items:
            if it.id in pos:
                clash.add(it.id)
            pos[it.id] = len(pos)
        if clash:
            raise ValueError(f"ids already in the index (or given twice): {sorted(clash)[:5]}")
        if self.kind == "ivf" and not self.index.is_trained:
            nlist = self.index.nlist
            if len(x) < nlist:
                raise ValueError(f"an ivf index with nlist={nlist} needs at least {nlist} vectors in its first add")
            self.index.train(x)
        self.index.add(x)
        self.items += items
        self._pos, self._by_lang = pos, None

    def search(self, queries: np.ndarray, k: int = 10, langs: set[str] | None = None) -> list[list[Hit]]:
        """The `k` nearest items of each (Q, D) query, best first; only items in `langs` when given."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = self._vectors(queries)
        ids = None if langs is None else self._positions(langs)
        allowed = len(self.items) if ids is None else len(ids)
        if not allowed:
            return [[] for _ in range(len(q))]
        params = None if ids is None else self._only(ids)
        scores, idx = self.index.search(q, min(k, allowed), params=params)  # (Q, k) each
        return [[Hit(**asdict(self.items[i]), score=float(s)) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, idx)]

    def _positions(self, langs: set[str]) -> np.ndarray:
        """Positions of the items in `langs`."""
        if self._by_lang is None:
            by: dict[str, list[int]] = {}
            for n, it in enumerate(self.items):
                by.setdefault(it.lang, []).append(n)
            self._by_lang = {lang: np.array(v, dtype=np.int64) for lang, v in by.items()}
        return np.concatenate([self._by_lang.get(lang, np.zeros(0, np.int64)) for lang in sorted(langs)] or
                              [np.zeros(0, np.int64)])

    def _only(self, ids: np.ndarray):
        """faiss search parameters that admit only positions `ids` (keeping the kind's search settings)."""
        faiss = _faiss()
        sel = faiss.IDSelectorBatch(ids)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.index.hnsw.efSearch)
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
        else:
            params = faiss.SearchParameters(sel=sel)
        params.keep = (sel, ids)  # the parameters hold only C pointers: keep their Python owners alive
        return params

    def search_margin(self, queries: np.ndarray, k: int = 10, margin_k: int = 4, candidates: int = 50,
                      langs: set[str] | None = None) -> list[list[Hit]]:
        """Like `search`, re-ranked by ratio margin: ``cos(x, y) / ((mean_x + mean_y) / 2)`` where mean_x is the
        query's mean cosine to its `margin_k` nearest items and mean_y an item's mean cosine to its `margin_k`
        nearest other items, so items close to everything (hubs) stop crowding the top. The `candidates` nearest
        items by cosine (only those in `langs`, when given) are re-ranked; ``score`` is the margin, ``cosine`` the
        cosine. The neighbourhoods behind the means span every language."""
        raw = self.search(queries, max(k, margin_k, candidates), langs)
        if not self.items:
            return raw
        near_q = raw if langs is None else self.search(queries, margin_k)
        if self.kind == "ivf" and self.index.direct_map.type == _faiss().DirectMap.NoMap:
            self.index.make_direct_map()  # lets reconstruct() find vectors by position (kept up to date by add)
        pos = self._pos
        out = []
        for hits, nq in zip(raw, near_q):
            if not hits:
                out.append([])
                continue
            mean_x = float(np.mean([h.score for h in nq[:margin_k]]))
            vecs = np.stack([self.index.reconstruct(pos[h.id]) for h in hits])  # (C, D)
            near, idx = self.index.search(vecs, min(margin_k + 1, len(self.items)))  # (C, margin_k + 1)
            mean_y = [float(np.mean([s for s, i in zip(srow, irow) if i != pos[h.id]][:margin_k] or [0.0]))
                      for h, srow, irow in zip(hits, near, idx)]
            ranked = sorted(((h.score / ((mean_x + my) / 2), h) for h, my in zip(hits, mean_y)),
                            key=lambda t: -t[0])
            out.append([Hit(h.id, h.text, h.lang, float(m), h.score) for m, h in ranked[:k]])
        return out

    # -- disk --------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write a new version into `folder` and point ``current`` at it; older versions are removed."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # the next number after every version present: one a crash left behind before `current` named it is
        # passed over (and removed below), never written into
        n = max((int(v.name.split("-")[1]) for v in folder.glob("v-*") if v.name.split("-")[1].isdigit()), default=0)
        tmp = temp_dir(folder)
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            (tmp / "items.jsonl").write_text("".join(json.dumps(asdict(it), ensure_ascii=False) + "\n"
                                                     for it in self.items))
            meta = {"dim": self.dim, "kind": self.kind, "params": self.params,
                    "model_fingerprint": self.model_fingerprint, "model_path": self.model_path, "count": len(self.items)}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
            final = folder / f"v-{n + 1:06d}"
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(folder / "current", final.name)
        for old in [*folder.glob("v-*"), *folder.glob(".tmp-*")]:  # older versions, and what crashed saves left
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @classmethod
    def load(cls, folder: str | Path) -> TextIndex:
        """Read the current version of a saved index."""
        faiss = _faiss()
        version = _current(Path(folder))
        if version is None:
            raise FileNotFoundError(f"no index in {folder} (no 'current' version)")
        meta = json.loads((version / "index.json").read_text())
        self = cls(meta["dim"], meta["model_fingerprint"], meta["kind"], meta["params"])
        self.model_path = meta.get("model_path")
        self.index = faiss.read_index(str(version / "index.faiss"))
        self.items = [IndexedText(**json.loads(line)) for line in (version / "items.jsonl").read_text().splitlines()]
        self._pos = {it.id: n for n, it in enumerate(self.items)}
        if len(self.items) != meta["count"] or self.index.ntotal != meta["count"]:
            raise ValueError(f"{version}: {self.index.ntotal} vectors and {len(self.items)} items, expected "
                             f"{meta['count']}; the index is damaged")
        return self


def _current(folder: Path) -> Path | None:
    pointer = folder / "current"
    if not pointer.exists():
        return None
    version = folder / pointer.read_text().strip()
    return version if (version / "index.json").exists() else None


def model_fingerprint(model_dir: str | Path) -> str:
    """Identity of a trained checkpoint: SHA-256 of its weights and description."""
    folder = Path(model_dir)
    return sha256_file(folder / "model.safetensors")[:32] + sha256_file(folder / "model.json")[:32]


def ann_recall_at_k(exact: list[list[Hit]], approx: list[list[Hit]], k: int) -> float:
    """Share of the exact top-k ids that the approximate search also returns in its top k, over all queries."""
    found = sum(len({h.id for h in e[:k]} & {h.id for h in a[:k]}) for e, a in zip(exact, approx))
    total = sum(min(k, len(e)) for e in exact)
    return found / total if total else 1.0


# -- text collections and models ---------------------------------------------------------------------------


def read_texts(path: str | Path, lang: str | None = None, flag: str = "--lang") -> list[IndexedText]:
    """Texts to index: a manifest (``.jsonl``: each line's id, text and language) or a plain text file (one text
    a line, all in `lang`, the command's `flag`; ids are ``<file name>:<line number>``; blank lines are skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text file not found: {path}")
    if path.suffix == ".jsonl":
        return [IndexedText(u.id, u.text, u.lang) for u in read_manifest(path)]
    if lang is None:
        raise ValueError(f"{path}: a plain text file needs a language ({flag})")
    check_lang(lang)
    lines = path.read_text(encoding="utf-8").splitlines()
    texts = [IndexedText(f"{path.name}:{i}", line.strip(), lang) for i, line in enumerate(lines, 1) if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts (the file is empty)")
    return texts


def embed_items(dual, items: list[IndexedText], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(N, D) text embeddings of `items` (each in its own language) from a `DualEncoder`, in batches (with a
    progress bar on a terminal when `progress`)."""
    import torch

    out = []
    with torch.no_grad():
        batches = range(0, len(items), batch_size)
        for s in Progress(batches, desc="embedding", unit="batch", enabled=progress):
            batch = items[s : s + batch_size]
            out.append(dual.encode_text([it.text for it in batch], [it.lang for it in batch]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, dual.embed_dim), dtype=np.float32)


def embed_speech(dual, wavs: list[np.ndarray], langs: str | list[str], encoder=None) -> np.ndarray:
    """(N, D) embeddings of 16 kHz clips (in one language, or one per clip): the speech encoder the unit
    tokenizer was fitted on -> audio units -> the dual encoder. Pass `encoder` to reuse a loaded one."""
    import torch

    tok = dual.unit_tokenizer
    if tok is None:
        raise ValueError("this dual-encoder checkpoint has no unit tokenizer, so it cannot embed audio")
    encoder = encoder or encoder_for_units(tok)
    with torch.no_grad():
        seqs = [tok(feats.numpy()) for feats in encoder.encode(wavs)]  # unit ids, or (T, D) features
        return dual.encode_speech(seqs, langs).float().numpy()


def build_index(model_dir: str | Path, items: list[IndexedText], folder: str | Path, kind: str | None = None,
                params: dict | None = None, batch_size: int = 64) -> TextIndex:
    """Embed `items` with a trained dual encoder and add them to the index in `folder` (made if absent, of `kind`,
    flat by default; else extended with the ids it lacks: the model and kind must be the ones it was built with);
    saves a new version when anything changed."""
    fingerprint = model_fingerprint(model_dir)
    index = TextIndex.load(folder) if _current(Path(folder)) is not None else None
    if index is not None:
        index.check_model(fingerprint)
        if kind is not None and kind != index.kind:
            raise ValueError(f"{folder} is a {index.kind} index; --kind {kind} needs another folder (or leave it out)")
    known = {it.id for it in index.items} if index is not None else set()
    new = [it for it in items if it.id not in known]
    if index is None or new:  # the model is loaded only when there is something to embed or create
        dual = DualEncoder.load(model_dir).eval()
        if index is None:  # (not `or`: an empty index is falsy)
            index = TextIndex(dual.embed_dim, fingerprint, kind or "flat", params)
        if new:
            index.add(embed_items(dual, new, batch_size), new)
        index.model_path = str(Path(model_dir).resolve())
        index.save(folder)
    return index


# -- margin-based mining ---------------------------------------------------------------------------------------


def _knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` inner products of each query among `base`: (Q, k) scores and indices."""
    index = _faiss().IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))


def mine_pairs(x: np.ndarray, y: np.ndarray, k: int = 4, threshold: float = 1.0) -> list[tuple[int, int, float, float]]:
    """Pairs (i, j) of two collections by ratio margin (Artetxe & Schwenk 2019), best first, each item used once.

    ``margin(x, y) = cos(x, y) / ((mean cos of x to its k nearest y) + (mean cos of y to its k nearest x)) * 2``:
    a pair scores high when the two are closer to each other than to their other neighbours, which discounts
    hubs (items near everything). Candidates are each item's k nearest in the other collection, both ways;
    pairs are taken greedily by margin, skipping items already paired; pairs below `threshold` are dropped.

    Returns (i, j, margin, cosine) tuples.
    """
    if len(x) == 0 or len(y) == 0:
        return []
    sxy, ixy = _knn(x, y, k)  # (n, k): x's neighbours in y
    syx, iyx = _knn(y, x, k)  # (m, k): y's neighbours in x
    mean_x, mean_y = sxy.mean(1), syx.mean(1)
    candidates: dict[tuple[int, int], float] = {}
    for i in range(len(x)):
        for s, j in zip(sxy[i], ixy[i]):
            candidates[i, int(j)] = float(s)
    for j in range(len(y)):
        for s, i in zip(syx[j], iyx[j]):
            candidates[int(i), j] = float(s)
    scored = sorted(((cos / ((mean_x[i] + mean_y[j]) / 2), cos, i, j) for (i, j), cos in candidates.items()),
                    reverse=True)
    used_x, used_y, pairs = set(), set(), []
    for margin, cos, i, j in scored:
        if margin < threshold:
            break
        if i not in used_x and j not in used_y:
            used_x.add(i)
            used_y.add(j)
            pairs.append((i, j, float(margin), cos))
    return pairs
