"""The linear probe of audio units: recovers content that the units carry, and refuses empty input."""

import numpy as np
import pytest

from polyvox.data.manifest import Utterance
from polyvox.eval.probe import linear_probe

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "river", "stone", "bird", "fish", "lamp"]


def corpus(n_train=300, n_test=40):
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n_train + 2 * n_test):
        lang, split = ("fr_fr", "train") if i < n_train else (("fr_fr", "test") if i < n_train + n_test else ("pl_pl", "test"))
        utts.append(Utterance(id=f"u{i}", audio="x.flac", text=" ".join(rng.choice(WORDS, 4)) + f" {i % 7}",
                              lang=lang, split=split))
    return [u for u in utts if u.split == "train"], [u for u in utts if u.split == "test"]


@pytest.mark.parametrize("kind", ["units", "features"])
def test_probe_recovers_content_the_units_carry(kind):
    train, test = corpus()
    rng = np.random.default_rng(1)

    def speech(text):  # one unit (or one-hot frame) per character: the units carry every letter
        ids = [ord(c) % 40 for c in text]
        return ids if kind == "units" else np.eye(40, dtype=np.float32)[ids] + 0.01 * rng.standard_normal((len(ids), 40))

    units = {u.id: speech(u.text) for u in train + test}
    r = linear_probe(train, test, units)
    assert r["languages"]["fr_fr"]["seen"] and not r["languages"]["pl_pl"]["seen"]
    assert r["averages"]["seen"]["R@1"] >= 0.8 and r["averages"]["unseen"]["R@1"] >= 0.8
    # units that carry nothing (the same for every clip, apart from length) are near chance
    blank = {u.id: [0] * len(u.text) if kind == "units" else np.ones((len(u.text), 40), np.float32) for u in train + test}
    assert linear_probe(train, test, blank)["averages"]["seen"]["R@1"] < 0.3


def test_probe_needs_encoded_utterances():
    train, test = corpus(20, 5)
    with pytest.raises(ValueError, match="needs encoded training and test utterances"):
        linear_probe(train, test, {})
