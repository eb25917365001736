"""Shared fixtures: a tiny 'tone language' corpus of real FLAC files, generated on the fly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from polyvox.audio import SAMPLE_RATE, write_flac
from polyvox.data.manifest import Utterance, write_manifest

# Tiny models gain nothing from threads, and a busy machine makes them thrash.
torch.set_num_threads(1)

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "river", "stone", "bird", "fish"]


def tone_speech(text: str, seed: int = 0) -> np.ndarray:
    """Audio whose content follows the text: one 60 ms tone per character, pitch set by the character."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.06 * SAMPLE_RATE)) / SAMPLE_RATE
    parts = [0.3 * np.sin(2 * np.pi * (200 + 15 * (ord(c) % 64)) * t) for c in text]
    wav = np.concatenate(parts) + 0.01 * rng.standard_normal(len(t) * len(text))
    return wav.astype(np.float32)


def make_corpus(root, langs=("fr_fr", "de_de", "pl_pl"), n=8, test_langs=("pl_pl",)):
    """Write a manifest + FLAC files: `n` utterances per language; `test_langs` get only test items."""
    rng = np.random.default_rng(0)
    utts = []
    for lang in langs:
        for i in range(n):
            text = " ".join(rng.choice(WORDS, 3))
            audio = f"audio/{lang}/{i:03d}.flac"
            write_flac(root / audio, tone_speech(text, i))
            split = "test" if lang in test_langs or i % 4 == 0 else "train"
            utts.append(Utterance(id=f"{lang}/{i:03d}", audio=audio, text=text, lang=lang, split=split,
                                  translations={"en_us": text.upper()}, group=f"g{i}"))
    return write_manifest(root / "manifest.jsonl", utts)


def content_sensitive(model) -> None:
    """Make the random tiny Whisper encoder hear what a clip says.

    Its weights are initialised at std 0.02, so the convolution outputs are tiny next to the sinusoidal
    position table added after them: every clip then encodes to nearly the same features. Scaling the two
    input convolutions by 10 puts the audio content on the scale of the positions.
    """
    with torch.no_grad():
        for conv in (model.encoder.encoder.conv1, model.encoder.encoder.conv2):
            conv.weight.mul_(10)


def char_speech(text: str, seed: int = 0) -> np.ndarray:
    """`tone_speech` with each character held for 160 ms: one conv-GLU adapter position (8 encoder frames).

    The taught LLM copies its input one character per position. With `tone_speech`'s 60 ms tones an adapter
    position has to carry ~3 characters, which the frozen LLM was never taught to read, and training from
    some seeds stalls a token short; at one character per position every seed tried learns every clip.
    """
    n = int(0.16 * SAMPLE_RATE)
    return np.concatenate([tone_speech(c * 3, seed)[:n] for c in text])


@pytest.fixture
def tiny_corpus(tmp_path):
    return make_corpus(tmp_path)


@dataclass
class TinySearch:
    manifest: Path  # 24 utterances: fr_fr, de_de, pl_pl
    model: Path  # a tiny trained dual encoder with its unit tokenizer
    index: Path  # a flat index over the 24 transcripts


@pytest.fixture(scope="session")
def tiny_search(tmp_path_factory) -> TinySearch:
    """A tiny dual encoder trained for 2 steps (configs/tiny.yaml) and an index over its corpus' texts."""
    from polyvox.cli import main

    root = tmp_path_factory.mktemp("tiny-search")
    manifest = make_corpus(root)
    args = ["--config", str(Path(__file__).parents[1] / "configs" / "tiny.yaml"), "--manifest", str(manifest),
            "--out", str(root / "run"), "--set", "train.steps=2"]
    for cmd in (["units", "fit"], ["units", "encode"], ["train", "retrieval"]):
        assert main([*cmd, *args]) == 0
    model = root / "run" / "model"
    assert main(["index", "build", "--model", str(model), "--texts", str(manifest), "--out", str(root / "index")]) == 0
    return TinySearch(manifest, model, root / "index")
