"""Discrete audio units: k-means (faiss) over pooled speech-encoder features, with save/load and a cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from polyvox.audio import MIN_CLIP_S, AudioError, load_audio
from polyvox.data.manifest import ManifestError, Utterance
from polyvox.fileio import atomic_write, atomic_write_text, read_safetensors
from polyvox.models.speech_encoder import SpeechEncoder
from polyvox.progress import Progress
from polyvox.sysmem import trim_heap

log = logging.getLogger(__name__)


@dataclass
class UnitSpec:
    """What a unit tokenizer was fitted on; two tokenizers with equal specs and centroids are the same."""

    encoder: str
    encoder_fingerprint: str
    layer: int
    pool: int
    pad_to_30s: bool
    dedup: bool
    num_units: int
    kind: str = "kmeans"
    """``kmeans``: discrete unit ids; ``features``: the pooled frames themselves (continuous, float16)."""


class UnitTokenizer:
    """Maps (T, D) speech features to (T,) unit ids by nearest k-means centroid."""

    def __init__(self, centroids: np.ndarray, spec: UnitSpec):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)  # (K, D)
        self.spec = spec
        self._index = None

    @property
    def num_units(self) -> int:
        return self.centroids.shape[0]

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(self.centroids.tobytes())
        h.update(json.dumps(asdict(self.spec), sort_keys=True).encode())
        return h.hexdigest()[:16]

    @classmethod
    def fit(cls, feats: list[np.ndarray], spec: UnitSpec, iters: int = 25, max_frames: int = 300_000,
            seed: int = 0) -> UnitTokenizer:
        """Fit k-means on frames sampled (with `seed`) from a list of (T_i, D) feature arrays."""
        import faiss

        x = np.concatenate(feats).astype(np.float32)  # (N, D)
        if len(x) < spec.num_units:
            raise ValueError(f"only {len(x)} frames to fit {spec.num_units} units; use more audio or fewer units")
        rng = np.random.default_rng(seed)
        if len(x) > max_frames:
            x = x[np.sort(rng.choice(len(x), max_frames, replace=False))]
        km = faiss.Kmeans(x.shape[1], spec.num_units, niter=iters, seed=seed, verbose=False,
                          max_points_per_centroid=max(1, len(x) // spec.num_units + 1))
        km.train(x)
        log.info("k-means: %d units from %d frames, objective %.1f", spec.num_units, len(x), km.obj[-1])
        return cls(km.centroids, spec)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """Unit ids (T,) of features (T, D); runs of one unit collapse to one when `spec.dedup`."""
        import faiss

        if self._index is None:
            self._index = faiss.IndexFlatL2(self.centroids.shape[1])
            self._index.add(self.centroids)
        _, ids = self._index.search(np.ascontiguousarray(feats, dtype=np.float32), 1)
        ids = ids[:, 0].astype(np.int64)
        if self.spec.dedup and len(ids) > 1:
            ids = ids[np.concatenate([[True], ids[1:] != ids[:-1]])]
        return ids

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "units.safetensors", lambda p: save_file({"centroids": self.centroids}, p))
        atomic_write_text(folder / "units.json", json.dumps(asdict(self.spec), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> UnitTokenizer:
        folder = Path(folder)
        if not (folder / "units.json").exists():
            raise FileNotFoundError(f"no unit tokenizer in {folder} (run `polyvox units fit` first)")
        spec = UnitSpec(**json.loads((folder / "units.json").read_text()))
        return cls(read_safetensors(folder / "units.safetensors")["centroids"], spec)


class FeatureTokenizer:
    """The continuous counterpart of `UnitTokenizer`: keeps the pooled encoder frames (T, D) as float16.

    Same interface (spec, fingerprint, save/load, call), so the cache, the recipes, the index and the
    server treat discrete and continuous speech inputs alike; ``num_units`` is 0 and ``dim`` is D.
    """

    def __init__(self, spec: UnitSpec, dim: int):
        self.spec, self.dim = spec, dim

    num_units = 0

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps({**asdict(self.spec), "dim": self.dim}, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"features must be (T, {self.dim}), got {feats.shape}")
        return np.asarray(feats, dtype=np.float16)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "units.json", json.dumps({**asdict(self.spec), "dim": self.dim}, indent=2))
        return folder


SpeechTokenizer = UnitTokenizer | FeatureTokenizer


def load_speech_tokenizer(folder: str | Path) -> SpeechTokenizer:
    """The unit tokenizer (k-means) or feature tokenizer (continuous) saved in `folder`."""
    folder = Path(folder)
    if not (folder / "units.json").exists():
        raise FileNotFoundError(f"no unit tokenizer in {folder} (run `polyvox units fit` first)")
    meta = json.loads((folder / "units.json").read_text())
    if meta.get("kind", "kmeans") == "features":
        dim = meta.pop("dim")
        return FeatureTokenizer(UnitSpec(**meta), dim)
    return UnitTokenizer.load(folder)


def encoder_for_units(tok: SpeechTokenizer) -> SpeechEncoder:
    """The speech encoder a unit tokenizer was fitted on (same encoder, layer, pooling and padding)."""
    s = tok.spec
    return SpeechEncoder.load(s.encoder, s.layer, s.pool, s.pad_to_30s)


@dataclass
class BadLine:
    """An utterance that could not be encoded, and why."""

    id: str
    error: str


def iter_features(utts: list[Utterance], root: str | Path, encoder: SpeechEncoder, batch_size: int = 16,
                  desc: str = "encoding", chunk: int = 512
                  ) -> Iterator[tuple[Utterance, np.ndarray | None, str | None]]:
    """Yield (utterance, (T, D) features or None, error or None), batching clips of similar length.

    Audio is read `chunk` clips at a time in manifest-duration order, so memory depends on the chunk, not
    on the corpus. Unreadable audio is reported as an error for that utterance; the rest go on.
    """
    order = sorted(utts, key=lambda u: u.duration or 0.0)
    bar = Progress(total=len(order), desc=desc, unit="utt")
    for c in range(0, len(order), chunk):
        loaded: list[tuple[Utterance, np.ndarray]] = []
        for u in order[c : c + chunk]:
            try:
                loaded.append((u, load_audio(u.audio_path(root), f"{u.id} ({u.audio})", MIN_CLIP_S)))
            except (AudioError, ValueError) as e:
                bar.update(1)
                yield u, None, str(e)
        loaded.sort(key=lambda p: len(p[1]))
        for i in range(0, len(loaded), batch_size):
            part = loaded[i : i + batch_size]
            try:
                feats = encoder.encode([w for _, w in part])
            except ValueError as e:  # e.g. a clip over 30 s: report each clip of the batch on its own
                for u, w in part:
                    try:
                        yield u, encoder.encode([w])[0].numpy(), None
                    except ValueError as e1:
                        yield u, None, f"{u.id}: {e1}"
                log.debug("batch fell back to single clips: %s", e)
            else:
                for (u, _), f in zip(part, feats):
                    yield u, f.numpy(), None
            bar.update(len(part))
        del loaded
        trim_heap()  # decoded audio and encoder buffers of every size: keep the footprint at the chunk's
    bar.close()


class UnitCache:
    """Speech-tokenizer outputs on disk, keyed by a digest of the audio file's bytes (a rebuilt corpus with the
    same ids is re-encoded, never served stale; a moved or copied one is not re-encoded), under the tokenizer's
    fingerprint. Entries written under the older ``id<TAB>path<TAB>digest`` keys are found by their digest.

    Unit ids go to one JSONL file (``units-<fp>.jsonl``); continuous features to safetensors shards in
    ``features-<fp>/``, each written atomically, so a killed run keeps every shard it finished.
    """

    def __init__(self, folder: str | Path, tokenizer: SpeechTokenizer, root: str | Path = "."):
        self.root = Path(root)
        self._keys: dict[str, str] = {}  # audio path -> digest of its bytes
        self.binary = isinstance(tokenizer, FeatureTokenizer)
        self.data: dict[str, list[int]] = {}  # unit ids (k-means tokenizer)
        self._shards: dict[str, tuple[Any, str]] = {}  # features: key -> (open shard, name in it); read when asked
        if self.binary:
            self.path = Path(folder) / f"features-{tokenizer.fingerprint}"
            for shard in sorted(self.path.glob("*.safetensors")):
                handle = safe_open(str(shard), framework="np")
                self._shards.update({_digest_of(name): (handle, name) for name in handle.keys()})
            return
        self.path = Path(folder) / f"units-{tokenizer.fingerprint}.jsonl"
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        break  # a torn last line from an interrupted run
                    self.data[_digest_of(row["key"])] = row["units"]

    def key(self, u: Utterance) -> str:
        """The digest of the clip's audio bytes (read once per path)."""
        if u.audio not in self._keys:
            try:
                digest = hashlib.blake2b(u.audio_path(self.root).read_bytes(), digest_size=8).hexdigest()
            except (OSError, ManifestError):
                digest = "unreadable"  # never stored: encoding reports the clip as a bad line
            self._keys[u.audio] = digest
        return self._keys[u.audio]

    def has(self, u: Utterance) -> bool:
        key = self.key(u)
        return key in self._shards if self.binary else key in self.data

    def get(self, u: Utterance) -> list[int] | np.ndarray | None:
        key = self.key(u)
        if self.binary:
            if key not in self._shards:
                return None
            handle, name = self._shards[key]
            return handle.get_tensor(name)
        return self.data.get(key)

    def add_many(self, rows: list[tuple[Utterance, list[int] | np.ndarray]]) -> None:
        if self.binary:
            self.path.mkdir(parents=True, exist_ok=True)
            shard = {self.key(u): np.ascontiguousarray(x) for u, x in rows}
            name = f"{len(list(self.path.glob('*.safetensors'))):06d}.safetensors"
            atomic_write(self.path / name, lambda p: save_file(shard, p))
            handle = safe_open(str(self.path / name), framework="np")
            self._shards.update({key: (handle, key) for key in shard})
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for u, units in rows:
                self.data[self.key(u)] = units
                f.write(json.dumps({"key": self.key(u), "units": units}) + "\n")


def _digest_of(key: str) -> str:
    """A stored key's audio digest: the key itself, or the last field of an older ``id<TAB>path<TAB>digest`` key."""
    return key.rsplit("\t", 1)[-1]


class CachedFeatures(Mapping):
    """Utterance id -> (T, D) features, read from the cache's shards when asked: the memory a caller uses is what it
    keeps, not the corpus (a `full` corpus's features are several GB)."""

    def __init__(self, cache: UnitCache, utts: dict[str, Utterance]):
        self.cache, self.utts = cache, utts

    def __getitem__(self, uid: str) -> np.ndarray:
        return self.cache.get(self.utts[uid])

    def __iter__(self) -> Iterator[str]:
        return iter(self.utts)

    def __len__(self) -> int:
        return len(self.utts)


def encode_units(utts: list[Utterance], root: str | Path, encoder: SpeechEncoder, tokenizer: SpeechTokenizer,
                 cache_dir: str | Path | None = None, batch_size: int = 16
                 ) -> tuple[Mapping[str, list[int] | np.ndarray], list[BadLine]]:
    """Unit sequences (or continuous features) for utterances, reading and filling the cache; bad lines
    are reported, not fatal. Audio is read in duration-sorted chunks (`iter_features`) and, with a cache,
    features are written to it as they come and returned as a `CachedFeatures` view, so memory does not grow
    with the corpus.

    Returns:
        units: utterance id -> unit ids (k-means tokenizer) or (T, D) float16 features.
        bad: utterances that could not be encoded, with the reason.
    """
    cache = UnitCache(cache_dir, tokenizer, root) if cache_dir is not None else None
    lazy = cache is not None and cache.binary
    out: dict[str, list[int] | np.ndarray] = {}
    done: dict[str, Utterance] = {}  # what a lazy view serves
    todo = []
    for u in utts:
        if lazy and cache.has(u):
            done[u.id] = u
            continue
        hit = cache.get(u) if cache else None
        if hit is not None:
            out[u.id] = hit
        else:
            todo.append(u)
    if cache and (out or done):
        log.info("unit cache: %d of %d utterances cached", len(out) + len(done), len(utts))
    bad, pending = [], []
    for u, feats, err in iter_features(todo, root, encoder, batch_size, desc="units"):
        if err is not None:
            log.warning("skipping %s", err)
            bad.append(BadLine(u.id, err))
            continue
        units = tokenizer(feats) if isinstance(tokenizer, FeatureTokenizer) else tokenizer(feats).tolist()
        if lazy:
            done[u.id] = u
        else:
            out[u.id] = units
        pending.append((u, units))
        if cache and len(pending) >= 256:
            cache.add_many(pending)
            pending = []
    if cache and pending:
        cache.add_many(pending)
    if lazy:  # in the callers' order, as the dict would be
        return CachedFeatures(cache, {u.id: done[u.id] for u in utts if u.id in done}), bad
    return out, bad


def fit_units(utts: list[Utterance], root: str | Path, encoder: SpeechEncoder, spec: UnitSpec, iters: int = 25,
              max_frames: int = 300_000, seed: int = 0, batch_size: int = 16) -> tuple[UnitTokenizer, list[BadLine]]:
    """Encode utterances and fit a unit tokenizer on their frames (bad lines are skipped and returned)."""
    feats, bad = [], []
    for u, f, err in iter_features(utts, root, encoder, batch_size, desc="features"):
        if err is not None:
            log.warning("skipping %s", err)
            bad.append(BadLine(u.id, err))
        else:
            feats.append(f)
    if not feats:
        raise ValueError("no usable audio to fit units on")
    return UnitTokenizer.fit(feats, spec, iters=iters, max_frames=max_frames, seed=seed), bad

