"""CTranslate2 ``model.bin`` files (binary version 6) without the ctranslate2 runtime, and their Whisper
models as Hugging Face objects.

Layout, all little-endian:

    uint32 binary_version
    string spec_name            (uint16 length including the trailing NUL, then the bytes)
    uint32 spec_revision
    uint32 n_variables
      string name, uint8 rank, uint32 dims[rank], uint8 dtype_id, uint32 n_bytes, bytes data
    uint32 n_aliases
      string alias, string target
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

BINARY_VERSION = 6

# CTranslate2's DataType enum, in id order; bfloat16 has no numpy dtype and is kept as raw uint16 bits.
DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}


class CT2FormatError(ValueError):
    """A file that is not a readable CTranslate2 model; the message names the file and offset."""


@dataclass
class CT2Model:
    """The contents of one CTranslate2 model file."""

    spec: str
    """Model spec name, e.g. ``WhisperSpec``."""
    revision: int
    """Spec revision."""
    variables: dict[str, np.ndarray]
    """Variable name -> array (bfloat16 variables hold their raw uint16 bits)."""
    dtypes: dict[str, str] = field(default_factory=dict)
    """Variable name -> CTranslate2 dtype name."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias name -> name of the variable it shares storage with."""
    version: int = BINARY_VERSION
    """Binary format version."""

    def get(self, name: str) -> np.ndarray:
        """Return a variable by name, following aliases.

        Raises:
            KeyError: neither a variable nor an alias of one.
        """
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise KeyError(f"CTranslate2 model ({self.spec}) has no variable {name!r}")
        return self.variables[name]

    def scalar(self, name: str) -> int | float:
        """Return a rank-0 variable (a spec option such as ``num_heads``) as a Python number."""
        return self.get(name).reshape(()).item()


class _Cursor:
    def __init__(self, buf: memoryview, where: str):
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.where}: truncated at byte {self.pos} (wanted {n} more, file has {len(self.buf)})"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.u16()))
        if not raw.endswith(b"\0"):
            raise CT2FormatError(f"{self.where}: string before byte {self.pos} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def parse(buf: bytes | memoryview, where: str = "<bytes>") -> CT2Model:
    """Parse a CTranslate2 model from an in-memory buffer.

    Arrays are copied out of `buf`, so they are writable and do not keep it alive.

    Raises:
        CT2FormatError: unsupported version, unknown dtype, size mismatch or truncation.
    """
    cur = _Cursor(memoryview(buf), where)
    version = cur.u32()
    if not 3 <= version <= BINARY_VERSION:
        raise CT2FormatError(f"{where}: unsupported CTranslate2 binary version {version}")
    spec = cur.string()
    revision = cur.u32()
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(cur.u32()):
        name = cur.string()
        rank = cur.u8()
        shape = tuple(cur.u32() for _ in range(rank))
        type_id = cur.u8()
        if type_id >= len(DTYPES):
            raise CT2FormatError(f"{where}: variable {name!r} has unknown dtype id {type_id}")
        dtype = DTYPES[type_id]
        n_bytes = cur.u32()
        expected = int(np.prod(shape, dtype=np.int64)) * _NUMPY[dtype].itemsize
        if n_bytes != expected:
            raise CT2FormatError(
                f"{where}: variable {name!r} has {n_bytes} bytes, shape {shape} {dtype} needs {expected}"
            )
        data = cur.take(n_bytes)
        variables[name] = np.frombuffer(data, dtype=_NUMPY[dtype]).reshape(shape).copy()
        dtypes[name] = dtype
    aliases: dict[str, str] = {}
    for _ in range(cur.u32()):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != len(cur.buf):
        raise CT2FormatError(f"{where}: {len(cur.buf) - cur.pos} unexpected trailing bytes")
    return CT2Model(spec, revision, variables, dtypes, aliases, version)


def read(path: str | Path) -> CT2Model:
    """Read a CTranslate2 ``model.bin`` file.

    Raises:
        CT2FormatError: the file is not a valid CTranslate2 model; the message names it.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise CT2FormatError(f"{path}: file is empty")
    return parse(data, where=str(path))


def _write_string(f: BinaryIO, s: str) -> None:
    raw = s.encode("utf-8") + b"\0"
    f.write(struct.pack("<H", len(raw)))
    f.write(raw)


def write(model: CT2Model, path: str | Path) -> None:
    """Write `model` in CTranslate2 binary format (the inverse of :func:`read`)."""
    with Path(path).open("wb") as f:
        f.write(struct.pack("<I", model.version))
        _write_string(f, model.spec)
        f.write(struct.pack("<II", model.revision, len(model.variables)))
        for name, arr in model.variables.items():
            dtype = model.dtypes.get(name, str(arr.dtype))
            if dtype not in DTYPES:
                raise CT2FormatError(f"variable {name!r}: dtype {dtype} cannot be stored in CTranslate2 format")
            data = np.asarray(arr, dtype=_NUMPY[dtype])  # tobytes() is C order; keeps rank 0 (not 1)
            _write_string(f, name)
            f.write(struct.pack("<B", data.ndim))
            f.write(struct.pack(f"<{data.ndim}I", *data.shape))
            f.write(struct.pack("<BI", DTYPES.index(dtype), data.nbytes))
            f.write(data.tobytes())
        f.write(struct.pack("<I", len(model.aliases)))
        for alias, target in model.aliases.items():
            _write_string(f, alias)
            _write_string(f, target)


# ---------------------------------------------------------------------------------------------------------
# CTranslate2 WhisperSpec -> Hugging Face WhisperForConditionalGeneration state dict


def _layer_count(model: CT2Model, stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    return n


def whisper_dims(model: CT2Model) -> dict[str, int]:
    """Architecture sizes of a CTranslate2 Whisper model, as `WhisperConfig` keyword arguments."""
    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"expected a WhisperSpec model, got {model.spec}")
    vocab, d_model = model.get("decoder/embeddings/weight").shape
    return {
        "vocab_size": int(vocab),
        "d_model": int(d_model),
        "num_mel_bins": int(model.get("encoder/conv1/weight").shape[1]),
        "encoder_layers": _layer_count(model, "encoder"),
        "decoder_layers": _layer_count(model, "decoder"),
        "encoder_attention_heads": int(model.scalar("encoder/num_heads")),
        "decoder_attention_heads": int(model.scalar("decoder/num_heads")),
        "encoder_ffn_dim": int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(model.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(model.get("decoder/position_encodings/encodings").shape[0]),
    }


def whisper_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """Rename and split the variables of a CTranslate2 Whisper model into Hugging Face Whisper names.

    Every tensor variable of `model` is used; a leftover raises, so a spec change cannot silently drop
    weights. Arrays keep their stored dtype (float16 for the packaged model).

    Raises:
        CT2FormatError: not a WhisperSpec model, or variables that this mapping does not know.
    """
    dims = whisper_dims(model)
    d = dims["d_model"]
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        used.add(model.aliases.get(name, name))
        return model.get(name)

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}/weight")
        out[f"{dst}.bias"] = take(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}/gamma")
        out[f"{dst}.bias"] = take(f"{src}/beta")

    def split(src: str, dsts: list[str]) -> None:
        # CTranslate2 fuses projections along the output axis: (len(dsts) * d, d) -> len(dsts) x (d, d).
        # Hugging Face's k_proj has no bias; the converter stores zeros there, and a per-query constant added
        # to every key score cancels in the softmax anyway.
        w, b = take(f"{src}/weight"), take(f"{src}/bias")
        for i, dst in enumerate(dsts):
            out[f"{dst}.weight"] = w[i * d : (i + 1) * d]
            if not dst.endswith("k_proj"):
                out[f"{dst}.bias"] = b[i * d : (i + 1) * d]

    def layer(src: str, dst: str, cross: bool) -> None:
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        if cross:
            norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
            split(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
            linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(dims["encoder_layers"]):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")

    out["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(dims["decoder_layers"]):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    # The output projection is tied to the token embedding (CTranslate2 stores it as an alias).
    take("decoder/projection/weight")

    left = sorted(k for k, v in model.variables.items() if v.ndim > 0 and k not in used)
    if left:
        raise CT2FormatError(f"CTranslate2 Whisper variables not mapped: {', '.join(left[:8])}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Hugging Face Whisper objects (shared with the random test preset)


def whisper_generation_config(tok: Any, lang_ids: list[int], suppress: list[int], begin_suppress: list[int],
                              alignment_heads: list[list[int]], max_length: int) -> Any:
    """A `GenerationConfig` with what `WhisperForConditionalGeneration.generate` needs (languages, tasks, ...).

    Args:
        tok: the Whisper tokenizer; special-token ids are looked up in it.
        lang_ids: token ids of the language tokens (``<|en|>`` ...).
        suppress: ids never generated; begin_suppress: ids not generated first.
        alignment_heads: (layer, head) pairs for word timestamps.
        max_length: the decoder's position limit.
    """
    from transformers import GenerationConfig

    ids = tok.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=max_length,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        alignment_heads=alignment_heads,
        lang_to_id={tok.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=len(lang_ids) > 1,
        task="transcribe",  # the default prompt Whisper was trained with, as openai's forced_decoder_ids gave
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def whisper_config(dims: dict[str, int], tok: Any, suppress: list[int], begin_suppress: list[int]) -> Any:
    """A `WhisperConfig` from architecture sizes (see `whisper_dims`) and the tokenizer's special ids."""
    from transformers import WhisperConfig

    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    return WhisperConfig(
        **dims,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        tie_word_embeddings=True,
    )


def whisper_tokenizer(tokenizer_json: Path, vocabulary_txt: Path, vocab_size: int) -> Any:
    """A `WhisperTokenizerFast` from a CTranslate2 model's ``tokenizer.json``, grown to `vocab_size`.

    Raises:
        CT2FormatError: its ids disagree with ``vocabulary.txt`` (CTranslate2's id -> token list).
    """
    from transformers import WhisperTokenizerFast

    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    extra = [t["content"] for t in spec["added_tokens"] if t["special"] and t["content"] != "<|endoftext|>"]
    tok = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), extra_special_tokens=extra,
                               pad_token="<|endoftext|>")
    # tokenizer.json stops before the timestamp tokens <|0.00|> ... <|30.00|> that fill the model's vocab.
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - len(tok))])
    vocabulary = vocabulary_txt.read_text(encoding="utf-8").split("\n")[:vocab_size]
    if tok.convert_ids_to_tokens(list(range(vocab_size))) != vocabulary:
        raise CT2FormatError(f"{tokenizer_json}: token ids disagree with {vocabulary_txt.name}")
    return tok


def whisper_model(weights: dict[str, Any], config: Any, generation: Any) -> Any:
    """A float32 `WhisperForConditionalGeneration` (eval mode) holding `weights` (see `whisper_state_dict`)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) != {"proj_out.weight"} or unexpected:  # proj_out is tied to the token embedding
        raise CT2FormatError(f"Whisper conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = generation
    return model.eval()
