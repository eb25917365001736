"""A linear probe of speech units: how much of what was said a unit configuration carries, in seconds.

Speech side: TF-IDF over unit 1..3-grams (discrete units) or mean + standard deviation of the frames
(continuous features). Text side: TF-IDF over character 1..4-grams within word boundaries, reduced to
512 dimensions by truncated SVD, both fitted on the training texts. Ridge regression maps speech to text;
test clips rank their language's distinct transcripts by cosine. No training loop, no LLM: a fast check
of a unit layer, K or deduplication before any dual-encoder run, and a baseline the dual encoder must beat.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from polyvox.data.manifest import Utterance
from polyvox.eval.metrics import best_ranks, chance_recall, recall_from_ranks
from polyvox.eval.retrieval import macro_averages

log = logging.getLogger(__name__)


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ImportError("the linear probe needs scikit-learn: pip install 'polyvox[eval]'") from e


def _speech_matrix(seqs: list, fit_on: list | None = None, vectorizer=None):
    """(N, F) speech features and the fitted vectoriser (None for continuous features)."""
    if len(np.shape(seqs[0])) == 2:  # continuous (T, D) frames: mean and spread of each dimension
        seqs = [np.asarray(x, dtype=np.float32) for x in seqs]  # float16 sums of squares overflow
        return np.stack([np.concatenate([x.mean(0), x.std(0)]) for x in seqs]), None
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [" ".join(f"u{u}" for u in s) for s in seqs]
    if vectorizer is None:
        vectorizer = TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True, min_df=2, token_pattern=r"\S+")
        vectorizer.fit([" ".join(f"u{u}" for u in s) for s in fit_on])
    return vectorizer.transform(docs), vectorizer


def linear_probe(train: list[Utterance], test: list[Utterance], units: dict, seen: set[str] | None = None,
                 alpha: float = 1.0, dims: int = 512) -> dict:
    """Fit the probe on `train` and report per-language speech -> transcript R@1/5/10 on `test`.

    Args:
        train, test: utterances; those without an entry in `units` are left out.
        units: utterance id -> unit ids or (T, D) features.
        seen: languages counted as seen (default: the training languages).
        alpha: ridge regularisation.
        dims: SVD dimensions of the text side.

    Returns:
        ``{"languages": {lang: {"n", "candidates", "seen", "R@1", …}}, "averages": {...}, "hits": {...}}``,
        the layout of `polyvox.eval.retrieval.evaluate_retrieval`.
    """
    _sklearn()
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    train = [u for u in train if u.id in units]
    test = [u for u in test if u.id in units]
    if not train or not test:
        raise ValueError("the probe needs encoded training and test utterances")
    seen = seen if seen is not None else {u.lang for u in train}
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2)
    y_sparse = chars.fit_transform([u.text for u in train])
    svd = TruncatedSVD(min(dims, y_sparse.shape[1] - 1), random_state=0).fit(y_sparse)
    x, vec = _speech_matrix([units[u.id] for u in train], [units[u.id] for u in train])
    scaler = StandardScaler(with_mean=vec is None).fit(x)
    ridge = Ridge(alpha=alpha).fit(scaler.transform(x), svd.transform(y_sparse))

    def unit_rows(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)

    by_lang: dict[str, list[Utterance]] = defaultdict(list)
    for u in test:
        by_lang[u.lang].append(u)
    per_lang, hits = {}, {}
    for lang, us in sorted(by_lang.items()):
        cands = list(dict.fromkeys(u.text for u in us))
        gold = [cands.index(u.text) for u in us]
        xs, _ = _speech_matrix([units[u.id] for u in us], vectorizer=vec)
        pred = unit_rows(ridge.predict(scaler.transform(xs)))
        text = unit_rows(svd.transform(chars.transform(cands)))
        ranks = best_ranks(pred @ text.T, gold)
        per_lang[lang] = {"n": len(us), "candidates": len(cands), "seen": lang in seen,
                          **recall_from_ranks(ranks), "chance_R@1": chance_recall(len(cands))}
        hits[lang] = {"R@1": (ranks == 0).astype(int).tolist()}
    return {"languages": per_lang, "averages": macro_averages(per_lang), "hits": hits}
