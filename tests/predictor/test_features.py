import os

import numpy as np
import pytest

from shepherd.predictor.features import (
    SampleFeaturizer,
    SampleInfo,
    featurizer_from_spec,
    get_featurizer,
)

Q = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?"),
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]


def test_lexical_shape_determinism_and_counts():
    f = get_featurizer("lexical", n_features=64).fit(Q)
    X = f.transform(Q)
    assert X.shape == (3, f.dim) == (3, len(f.feature_names()))
    assert X.dtype == np.float32
    assert np.array_equal(X, f.transform(Q))  # no salted hashing: stable across calls and processes
    raw = f._counts(Q[0])
    names = f.feature_names()[64:]
    assert raw[names.index("n_numbers")] == 1.0  # "48"
    assert f._counts(Q[1])[names.index("n_numbers")] == 2.0  # "$12", "50"
    with pytest.raises(TypeError):
        f.transform("one string")


def test_lexical_state_round_trip():
    f = get_featurizer("lexical", n_features=32).fit(Q)
    g = featurizer_from_spec(f.spec(), f.state())
    assert np.array_equal(f.transform(Q), g.transform(Q))
    unfitted = get_featurizer("lexical", n_features=32)
    assert not np.array_equal(f.transform(Q), unfitted.transform(Q))


def test_concat_and_unknown():
    f = get_featurizer("lexical+lexical", parts=[{"name": "lexical", "config": {"n_features": 8}},
                                                 {"name": "lexical", "config": {"n_features": 4, "counts": False}}])
    assert f.name == "lexical+lexical"
    f.fit(Q)
    X = f.transform(Q)
    assert X.shape[1] == f.dim
    g = featurizer_from_spec(f.spec(), f.state())
    assert np.array_equal(X, g.transform(Q))
    with pytest.raises(ValueError, match="unknown featurizer"):
        get_featurizer("nope")


def test_sample_features():
    sf = SampleFeaturizer()
    agree = [SampleInfo("a", 10, True, -0.2, "5")] * 3
    split = [SampleInfo("a", 10, True, None, "5"), SampleInfo("b", 30, False, None, "6"),
             SampleInfo("c", 20, True, None, None)]
    X = sf.transform([agree, split])
    names = sf.feature_names
    assert X.shape == (2, sf.dim)
    assert X[0, names.index("all_agree")] == 1.0 and X[1, names.index("all_agree")] == 0.0
    assert X[0, names.index("answer_entropy")] == 0.0 and X[1, names.index("answer_entropy")] > 0
    assert X[0, names.index("has_logprob")] == 1.0 and X[1, names.index("has_logprob")] == 0.0
    assert X[1, names.index("no_answer_frac")] == pytest.approx(1 / 3)
    assert SampleFeaturizer.consensus(split) == ("5", 1)
    assert SampleFeaturizer.consensus(agree) == ("5", 3)


def test_sample_confidence_features_come_from_the_samples_token_logprobs():
    """With `confidence`, the samples' own token confidence (shepherd.confidence) is summarised per item:
    mean and min over the samples, and the share that carried log-probabilities. Traces without them train
    the featurizer as before (`carries_confidence` is False); an artifact's feature list restores it."""
    from shepherd.models.base import Generation, TokenLogprobs
    from shepherd.predictor.features import CONFIDENCE_FEATURE_NAMES, carries_confidence, sample_confidence

    def gen(lps):
        n = len(lps)
        lp = TokenLogprobs(list(lps), [0.5] * n, [1.0] * n, list(range(1, n + 1)))
        return Generation("x" * n, 10, n, "stop", 0.1, logprobs=lp)

    sure, unsure = gen([-0.01] * 20), gen([-0.01] * 10 + [-2.0] * 10)
    assert sample_confidence(Generation("x", 1, 1, "stop", 0.1)) is None
    a, b = sample_confidence(sure), sample_confidence(unsure)
    assert a[0] > b[0] and a[1] > b[1]  # lowest window, 10% quantile
    batch = [[SampleInfo.from_generation(sure, "5"), SampleInfo.from_generation(unsure, "5")],
             [SampleInfo.from_generation(unsure, "6"), SampleInfo("t", 3, True, None, "6")]]
    assert carries_confidence(batch) and not carries_confidence([[SampleInfo("t", 3, True, None, "6")]])
    sf = SampleFeaturizer(confidence=True)
    X = sf.transform(batch)
    names = sf.feature_names
    assert X.shape == (2, len(SampleFeaturizer().feature_names) + len(CONFIDENCE_FEATURE_NAMES)) == (2, sf.dim)
    assert X[0, names.index("lowest_window16_mean")] == pytest.approx((a[0] + b[0]) / 2)
    assert X[0, names.index("lowest_window16_min")] == pytest.approx(b[0])
    assert X[0, names.index("has_confidence")] == 1.0 and X[1, names.index("has_confidence")] == 0.5
    assert SampleFeaturizer.from_names(names).dim == sf.dim
    assert SampleFeaturizer.from_names(SampleFeaturizer().feature_names).dim == SampleFeaturizer().dim




@pytest.mark.slow
@pytest.mark.slow  # needs the embeddings extra (installed by .ci/run)
def test_minilm_offline_embeddings():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    f = get_featurizer("minilm")
    X = f.transform(Q)
    assert X.shape == (3, 384)
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-4)
    # the two money/time questions are closer to each other than to ... at least not identical
    assert not np.allclose(X[0], X[1])
    assert np.allclose(f.transform(Q[:1]), X[:1], atol=1e-5)
    # repeated queries come from the embedding cache: same rows, no second model call
    from shepherd.predictor import features as F

    calls = []
    real = F._cached_embeddings
    F._EMBED_CACHE.clear()
    try:
        F._cached_embeddings = lambda key, texts, dim, compute: real(
            key, texts, dim, lambda b: (calls.append(list(b)), compute(b))[1])
        first = f.transform([Q[2], Q[0], Q[2]])
        again = f.transform([Q[0], Q[2]])
    finally:
        F._cached_embeddings = real
    assert calls == [[Q[2], Q[0]]]  # each distinct text embedded once, the repeat in the batch included
    assert np.array_equal(again, first[[1, 0]]) and np.allclose(first, X[[2, 0, 2]], atol=1e-5)


@pytest.mark.slow  # needs the embeddings extra (installed by .ci/run)
def test_a_committed_embedding_table_gives_its_rows_and_learns_new_ones(tmp_path):
    """A study reads MiniLM rows from its committed table (another machine would compute them a hair
    differently); texts the table lacks are computed and added when the table closes."""
    from shepherd.embedding import MINILM, EmbeddingTable, text_key
    from shepherd.predictor import features as F

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tag = f"{MINILM}:256"
    fake = np.zeros(384, dtype=np.float32)
    fake[7] = 1.0  # no real embedding of Q[0] is this
    table = tmp_path / "emb.npz"
    np.savez_compressed(table, keys=np.asarray([text_key(tag, Q[0])], dtype="S64"), rows=fake[None, :])
    F._EMBED_CACHE.clear()
    f = get_featurizer("minilm")
    with EmbeddingTable(table) as t:
        X = f.transform([Q[0], Q[1]])
        assert t.added == 1
    assert np.array_equal(X[0], fake)  # from the table, not the model
    assert np.allclose(np.linalg.norm(X[1]), 1.0, atol=1e-4) and not np.array_equal(X[1], fake)
    with np.load(table) as z:  # Q[1]'s row was added
        keys = [k.decode() for k in z["keys"]]
        assert sorted(keys) == sorted([text_key(tag, Q[0]), text_key(tag, Q[1])])
        assert np.array_equal(z["rows"][keys.index(text_key(tag, Q[1]))], X[1])
    F._EMBED_CACHE.clear()
    before = table.read_bytes()
    with EmbeddingTable(table) as t:  # everything known: nothing computed, the file untouched
        assert np.array_equal(f.transform([Q[1], Q[0]]), X[[1, 0]]) and t.added == 0
    assert table.read_bytes() == before
    F._EMBED_CACHE.clear()
    assert not np.array_equal(f.transform([Q[0]])[0], fake)  # no table open: computed


def test_embedding_cache_is_bounded_and_keyed_by_model(monkeypatch):
    from shepherd.predictor import features as F

    monkeypatch.setattr(F, "EMBED_CACHE_SIZE", 3)
    F._EMBED_CACHE.clear()
    computed = []

    def compute(batch):
        computed.extend(batch)
        return np.array([[len(t), ord(t[0])] for t in batch], dtype=np.float32)

    a = F._cached_embeddings(("m1",), ["ab", "c", "ab"], 2, compute)
    assert a.tolist() == [[2, 97], [1, 99], [2, 97]] and computed == ["ab", "c"]
    F._cached_embeddings(("m2",), ["ab"], 2, compute)  # another model: its own rows
    assert computed == ["ab", "c", "ab"]
    F._cached_embeddings(("m1",), ["d", "e"], 2, compute)  # evicts the least recently used
    assert len(F._EMBED_CACHE) == 3 and (("m1",), "ab") not in F._EMBED_CACHE
    assert F._cached_embeddings(("m1",), [], 2, compute).shape == (0, 2)
    F._EMBED_CACHE.clear()


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, shepherd, shepherd.predictor, shepherd.predictor.cli; "
            "from shepherd.policies.registry import make_policy; "
            "import shepherd.policies.shepherding; "
            "print(','.join(m for m in ('torch', 'sentence_transformers', 'sklearn', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
