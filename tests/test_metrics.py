import numpy as np
import pytest

from polyvox.eval.metrics import chance_recall, corpus_bleu, recall_at_k


def brute_force_recall(scores, gold, k):
    hits = 0
    for q in range(scores.shape[0]):
        top = sorted(range(scores.shape[1]), key=lambda c: -scores[q, c])[:k]
        hits += any(c in np.atleast_1d(gold[q]) for c in top)
    return hits / scores.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((40, 25))
    gold = list(rng.integers(0, 25, 40))
    gold[3] = [1, 7, 9]  # several correct candidates (e.g. repeated recordings of one sentence)
    got = recall_at_k(scores, gold, (1, 5, 10, 30))
    for k in (1, 5, 10, 30):
        assert got[f"R@{k}"] == pytest.approx(brute_force_recall(scores, gold, k))


def test_recall_hand_example_and_ties():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    assert recall_at_k(scores, [0, 1, 1], (1, 2)) == {"R@1": 2 / 3, "R@2": 1.0}
    # a collapsed model (all scores equal) must not look perfect
    assert recall_at_k(np.ones((4, 4)), [0, 1, 2, 3], (1,))["R@1"] == 0.0


def test_recall_rejects_bad_shapes():
    with pytest.raises(ValueError, match="Q = len"):
        recall_at_k(np.zeros((3, 2)), [0, 1])


def test_chance_recall():
    assert chance_recall(150) == pytest.approx(1 / 150)
    assert chance_recall(10, k=5) == pytest.approx(0.5)
    assert chance_recall(3, k=5) == 1.0


def test_bleu_perfect_and_zero():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert corpus_bleu(["xyz qrs"], ["the cat sat on the mat"]) < 1.0


def test_bootstrap_macro_matches_hand_computed_values():
    from polyvox.eval.metrics import bootstrap_macro

    assert bootstrap_macro({"a": [1, 1, 1], "b": [0, 0]}) == (0.5, 0.5, 0.5)  # no spread within a language
    # one language, p = 0.3 over 400 items: the binomial interval is 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 400)
    mean, lo, hi = bootstrap_macro({"x": [1] * 120 + [0] * 280}, n=4000)
    half = 1.96 * (0.3 * 0.7 / 400) ** 0.5
    assert mean == 0.3 and abs(lo - (0.3 - half)) < 0.01 and abs(hi - (0.3 + half)) < 0.01
    # macro: two equal languages halve the variance of one
    _, lo2, hi2 = bootstrap_macro({"x": [1] * 120 + [0] * 280, "y": [1] * 120 + [0] * 280}, n=4000)
    assert abs((hi2 - lo2) - (hi - lo) / 2 ** 0.5) < 0.01
    import pytest

    with pytest.raises(ValueError, match="empty"):
        bootstrap_macro({"x": []})


def test_paired_difference_is_paired_and_averages_seeds():
    import numpy as np
    import pytest

    from polyvox.eval.metrics import bootstrap_macro, paired_difference

    # hand-computed: per-item differences [1, 0, 0, 0] in both seeds -> 0.25, each seed 0.25
    r = paired_difference([{"a": [1, 1, 0, 0]}, {"a": [1, 0, 0, 0]}], [{"a": [0, 1, 0, 0]}, {"a": [0, 0, 0, 0]}])
    assert r["mean"] == 0.25 and r["seeds"] == [0.25, 0.25]
    # seeds disagree: +1 on item 0 in one seed, -1 in the other -> 0 on average
    assert paired_difference([{"a": [1, 0]}, {"a": [0, 0]}], [{"a": [0, 0]}, {"a": [1, 0]}])["seeds"] == [0.5, -0.5]
    # the same 400 queries, the system right on 30 more: unpaired intervals overlap, the paired one excludes 0
    base = (np.arange(400) % 2).tolist()
    system = [1 if i < 60 else b for i, b in enumerate(base)]  # items 0, 2, ..., 58 flip 0 -> 1
    _, _, hi_b = bootstrap_macro({"x": base})
    _, lo_s, _ = bootstrap_macro({"x": system})
    assert lo_s < hi_b
    r = paired_difference([{"x": system}], [{"x": base}])
    assert r["mean"] == pytest.approx(0.075) and r["ci95"][0] > 0.04 and r["holds"]
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_difference([{"x": system}], [])


def test_item_statistics_sum_to_the_corpus_metrics_and_bootstrap_over_them():
    import numpy as np
    import pytest

    from polyvox.eval.metrics import (
        bootstrap_corpus_macro,
        bootstrap_macro,
        cer,
        chrf,
        item_statistics,
        score_from_statistics,
    )

    refs = ["the cat sat", "a dog ran", "hello world", "!!!", "Ça va, merci"]
    hyps = ["the cat sit", "a dig", "", "x", "ca va merci"]
    for metric, direct in (("CER", cer(refs, hyps)), ("chrF", chrf(hyps, refs))):
        stats = item_statistics(metric, hyps, refs)
        assert score_from_statistics(metric, stats.sum(0)) == pytest.approx(direct)
    assert len(item_statistics("CER", hyps, refs)) == 4  # "!!!" has nothing to recognise
    assert item_statistics("CER", [""], ["ab"]).tolist() == [[2.0, 2.0]]  # an empty answer deletes all
    # accuracy: the corpus bootstrap over (correct, 1) rows is the per-item bootstrap of 0/1 hits
    hits = {"x": [1, 0, 1, 1, 0, 0, 1], "y": [0, 0, 1]}
    stats = {g: item_statistics("accuracy", h, [1] * len(h)) for g, h in hits.items()}
    assert bootstrap_corpus_macro(stats, "accuracy") == pytest.approx(bootstrap_macro(hits))
    # a corpus metric is not the mean of item scores: the macro mean is each language's corpus score
    chrf_stats = {"a": item_statistics("chrF", hyps[:3], refs[:3]), "b": item_statistics("chrF", hyps[3:], refs[3:])}
    mean, lo, hi = bootstrap_corpus_macro(chrf_stats, "chrF", n=300)
    assert mean == pytest.approx((chrf(hyps[:3], refs[:3]) + chrf(hyps[3:], refs[3:])) / 2) and lo <= mean <= hi
    assert bootstrap_corpus_macro({"a": item_statistics("CER", ["ab"] * 4, ["ab"] * 4)}, "CER") == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown corpus metric"):
        item_statistics("BLEU", hyps, refs)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_corpus_macro({"a": np.zeros((0, 2))}, "CER")


def test_paired_corpus_difference_matches_brute_force_and_cancels_shared_items():
    import numpy as np
    import pytest

    from polyvox.eval.metrics import (
        bootstrap_corpus_difference,
        bootstrap_corpus_macro,
        item_statistics,
        score_from_statistics,
    )

    refs = {"x": ["the cat sat", "a dog ran", "hello world", "good night"], "y": ["uno dos", "tres", "cuatro cinco"]}
    hyp_a = {"x": ["the cat sat", "a dig ran", "hello", "good nite"], "y": ["uno do", "tres", "cinco"]}
    hyp_b = {"x": ["the bat sit", "dog", "", "god night"], "y": ["un dos", "tes", "cuatro"]}
    a = {g: item_statistics("CER", hyp_a[g], refs[g]) for g in refs}
    b = {g: item_statistics("CER", hyp_b[g], refs[g]) for g in refs}
    mean, lo, hi = bootstrap_corpus_difference(a, b, "CER", n=200, seed=3)
    # brute force: the same resampled indices for both systems, one language at a time
    rng = np.random.default_rng(3)
    boot = np.zeros(200)
    for g in refs:
        idx = rng.integers(0, len(a[g]), (200, len(a[g])))
        boot += [score_from_statistics("CER", a[g][i].sum(0)) - score_from_statistics("CER", b[g][i].sum(0))
                 for i in idx]
    boot /= 2
    macro = lambda s: np.mean([score_from_statistics("CER", s[g].sum(0)) for g in s])  # noqa: E731
    assert mean == pytest.approx(macro(a) - macro(b)) and mean < 0
    assert [lo, hi] == pytest.approx(np.quantile(boot, [0.025, 0.975]).tolist())
    assert bootstrap_corpus_difference(a, a, "CER") == (0.0, 0.0, 0.0)
    # accuracy: B right on half the items, A on the same ones and one more per language; alone their intervals
    # overlap, paired the difference is never below 0
    gold = [1] * 8
    hb = {g: item_statistics("accuracy", [1, 0, 1, 0, 1, 0, 1, 0], gold) for g in "pq"}
    ha = {g: item_statistics("accuracy", [1, 1, 1, 0, 1, 0, 1, 0], gold) for g in "pq"}
    (_, lo_a, _), (_, _, hi_b) = bootstrap_corpus_macro(ha, "accuracy"), bootstrap_corpus_macro(hb, "accuracy")
    d, d_lo, d_hi = bootstrap_corpus_difference(ha, hb, "accuracy")
    assert lo_a < hi_b and d == pytest.approx(0.125) and 0 <= d_lo < d <= d_hi
    with pytest.raises(ValueError, match="same groups and items"):
        bootstrap_corpus_difference(a, {"x": b["x"]}, "CER")
