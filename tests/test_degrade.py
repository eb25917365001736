"""Degraded recording conditions, checked against what each one must do to a signal."""

import numpy as np

from polyvox.audio import SAMPLE_RATE
from polyvox.data.degrade import CONDITIONS, noise, reverb, telephone


def tone(freq, seconds=1.0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_telephone_keeps_the_voice_band_and_drops_the_rest():
    low, mid, high = tone(100), tone(1000), tone(6000)
    for x in (low, mid, high):
        assert telephone(x).shape == x.shape and telephone(x).dtype == np.float32
    rms = lambda x: float(np.sqrt(np.mean(x[2000:-2000] ** 2)))  # noqa: E731
    assert rms(telephone(mid)) > 0.8 * rms(mid)
    assert rms(telephone(high)) < 0.05 * rms(high) and rms(telephone(low)) < 0.05 * rms(low)


def test_noise_has_the_asked_snr_and_is_seeded():
    x = tone(440)
    y = noise(x, seed=1, snr_db=10.0)
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert abs(snr - 10.0) < 0.01
    assert np.array_equal(y, noise(x, seed=1)) and not np.array_equal(y, noise(x, seed=2))


def test_reverb_matches_level_and_adds_a_tail():
    x = np.zeros(SAMPLE_RATE, dtype=np.float32)
    x[:800] = tone(500, 0.05)  # a 50 ms burst, then silence
    y = reverb(x, seed=0, rt60=0.6)
    assert abs(np.mean(y ** 2) - np.mean(x ** 2)) < 1e-3 * np.mean(x ** 2)
    assert np.abs(y[4000:8000]).max() > 0.01 and np.abs(x[4000:8000]).max() == 0  # energy after the burst
    assert set(CONDITIONS) == {"telephone", "noise10db", "reverb"}


def test_degraded_copies_are_written_once_and_again_when_the_original_changes(tmp_path):
    import os

    from polyvox.audio import load_audio, write_flac
    from polyvox.data.degrade import write_degraded
    from polyvox.data.manifest import Utterance

    src = tmp_path / "corpus"
    u = Utterance(id="fr_fr/1", lang="fr_fr", text="un", audio="audio/1.flac")
    write_flac(src / u.audio, tone(440))
    (copy,) = write_degraded([u], src, tmp_path / "noisy", "noise10db")
    assert copy.id == "fr_fr/1#noise10db"
    path = tmp_path / "noisy" / u.audio
    assert copy.audio == str(path.resolve())  # absolute: the copy lives outside the corpus
    first = load_audio(path)
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)  # a copy newer than its original is kept
    write_flac(src / u.audio, tone(880))
    os.utime(src / u.audio, ns=(path.stat().st_mtime_ns - 10**9,) * 2)
    write_degraded([u], src, tmp_path / "noisy", "noise10db")
    assert np.array_equal(load_audio(path), first)
    os.utime(src / u.audio, ns=(path.stat().st_mtime_ns + 10**9,) * 2)  # the original changed after the copy
    write_degraded([u], src, tmp_path / "noisy", "noise10db")
    assert not np.array_equal(load_audio(path), first)


def test_mixed_chains_conditions_at_their_stated_rates(monkeypatch):
    """`mixed`: per clip, reverb (RT60 0.2-0.9 s) with p 0.4, telephone with p 0.4, noise (5-25 dB) with p 0.6
    (always when neither of the others), in that order; the same seed gives the same chain."""
    from polyvox.data import degrade

    calls = []
    monkeypatch.setattr(degrade, "reverb", lambda x, seed, rt60: calls.append(("reverb", rt60)) or x + 1)
    monkeypatch.setattr(degrade, "telephone", lambda x, seed: calls.append(("telephone", None)) or x * 2)
    monkeypatch.setattr(degrade, "noise", lambda x, seed, snr_db: calls.append(("noise", snr_db)) or x - 3)
    chains = []
    for seed in range(2000):
        calls.clear()
        y = degrade.mixed(np.zeros(4, dtype=np.float32), seed)
        names = [c[0] for c in calls]
        assert names and names == sorted(names, key=["reverb", "telephone", "noise"].index)  # order kept
        expected = np.zeros(4)
        for name, _ in calls:
            expected = {"reverb": expected + 1, "telephone": expected * 2, "noise": expected - 3}[name]
        assert np.array_equal(y, expected)
        assert all(0.2 <= v <= 0.9 for n, v in calls if n == "reverb")
        assert all(5 <= v <= 25 for n, v in calls if n == "noise")
        chains.append(names)
    rate = lambda name: np.mean([name in c for c in chains])  # noqa: E731
    assert abs(rate("reverb") - 0.4) < 0.04 and abs(rate("telephone") - 0.4) < 0.04
    assert abs(rate("noise") - (0.6 + 0.4 * 0.36)) < 0.04  # noise, or the fallback when nothing else was drawn
    calls.clear()
    degrade.mixed(np.zeros(4, dtype=np.float32), 7)
    first = list(calls)
    calls.clear()
    degrade.mixed(np.zeros(4, dtype=np.float32), 7)
    assert calls == first
