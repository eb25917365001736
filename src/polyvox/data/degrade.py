"""Recording conditions for robustness tests and training augmentation: telephone band, additive noise,
reverberation, speed, and a random chain of them. Each is a pure function of a 16 kHz mono clip and a seed."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from polyvox.audio import SAMPLE_RATE, load_audio, write_flac
from polyvox.data.manifest import Utterance


def telephone(wav: np.ndarray, seed: int = 0) -> np.ndarray:
    """Narrow-band telephone speech: 300–3400 Hz, resampled through 8 kHz, 8-bit mu-law companding."""
    import soxr

    x = soxr.resample(wav, SAMPLE_RATE, 8000)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    x = np.fft.irfft(spec, len(x))
    mu = 255.0
    peak = max(float(np.abs(x).max()), 1e-9)
    q = np.round(np.sign(x) * np.log1p(mu * np.abs(x / peak)) / np.log1p(mu) * 127) / 127  # 8-bit mu-law
    x = np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu * peak
    return soxr.resample(x.astype(np.float32), 8000, SAMPLE_RATE).astype(np.float32)


def noise(wav: np.ndarray, seed: int = 0, snr_db: float = 10.0) -> np.ndarray:
    """Additive noise at `snr_db` (pink-ish: white noise with a 1/f amplitude slope, like room and street noise)."""
    rng = np.random.default_rng(seed)
    white = np.fft.rfft(rng.standard_normal(len(wav)))
    f = np.maximum(np.fft.rfftfreq(len(wav), 1 / SAMPLE_RATE), 20.0)
    n = np.fft.irfft(white / np.sqrt(f), len(wav))
    p_sig, p_noise = float(np.mean(wav ** 2)), float(np.mean(n ** 2))
    n *= np.sqrt(p_sig / max(p_noise, 1e-12) / 10 ** (snr_db / 10))
    return (wav + n).astype(np.float32)


def reverb(wav: np.ndarray, seed: int = 0, rt60: float = 0.6) -> np.ndarray:
    """Room reverberation: convolution with a synthetic impulse response (direct path + exponentially
    decaying noise tail reaching -60 dB after `rt60` seconds), level-matched to the dry clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 / 0.3  # direct path
    n = len(wav) + len(ir) - 1
    y = np.fft.irfft(np.fft.rfft(wav, n) * np.fft.rfft(ir, n), n)[: len(wav)]  # linear convolution
    return (y * np.sqrt(np.mean(wav ** 2) / max(float(np.mean(y ** 2)), 1e-12))).astype(np.float32)


def speed(wav: np.ndarray, seed: int = 0) -> np.ndarray:
    """Speed perturbation (tempo and pitch together, as resampling does): x0.9 or x1.1, chosen by the seed."""
    import soxr

    factor = (0.9, 1.1)[seed % 2]
    return soxr.resample(wav, SAMPLE_RATE, SAMPLE_RATE / factor).astype(np.float32)


def mixed(wav: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random chain per clip, for one training copy that covers many conditions: reverberation (RT60
    0.2–0.9 s) with probability 0.4, the telephone band with 0.4, noise (5–25 dB SNR) with 0.6; at least one."""
    rng = np.random.default_rng([seed, 1])
    rev, tel, noisy = rng.random(3) < (0.4, 0.4, 0.6)
    x = reverb(wav, seed, rt60=float(rng.uniform(0.2, 0.9))) if rev else wav
    x = telephone(x, seed) if tel else x
    snr = float(rng.uniform(5.0, 25.0))
    return noise(x, seed, snr_db=snr) if noisy or not (rev or tel) else x


CONDITIONS: dict[str, Callable[..., np.ndarray]] = {"telephone": telephone, "noise10db": noise, "reverb": reverb}
"""Named degradations of the robustness report."""
AUGMENTATIONS: dict[str, Callable[..., np.ndarray]] = {**CONDITIONS, "speed": speed, "mixed": mixed}
"""Named training augmentations (`train.augment`)."""


def write_degraded(utts: list[Utterance], root: str | Path, out_root: str | Path, name: str) -> list[Utterance]:
    """Degraded copies of `utts` (audio under `root`) as FLAC under `out_root`, same relative paths, seeded by
    the utterance id and written once (a re-run keeps a copy unless its original is newer); returns the copies,
    ids suffixed ``#name``. A clip that cannot be read is left out (the caller's encoding reports bad lines of
    the originals). A copy's `audio` is the absolute path of its file, so it needs no root."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown condition {name!r}; known: {', '.join(AUGMENTATIONS)}")
    out = []
    for u in utts:
        path, src = Path(out_root) / u.audio, u.audio_path(root)
        if not path.exists() or (src.exists() and src.stat().st_mtime_ns > path.stat().st_mtime_ns):
            try:
                wav = load_audio(src)
            except ValueError:
                continue
            write_flac(path, AUGMENTATIONS[name](wav, seed=zlib.crc32(u.id.encode())))  # same copy in any list
        out.append(replace(u, id=f"{u.id}#{name}", audio=str(path.resolve()), duration=None))
    return out


def augmentation_subset(utts: list[Utterance], fraction: float, seed: int) -> list[Utterance]:
    """The seeded share of `utts` that gets augmented copies (`train.augment_fraction`), in their order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train.augment_fraction must be in (0, 1], got {fraction}")
    if fraction >= 1:
        return list(utts)
    keep = np.random.default_rng(seed).choice(len(utts), round(fraction * len(utts)), replace=False)
    return [utts[i] for i in sorted(keep)]
