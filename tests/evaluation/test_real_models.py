"""Real small models on the bundled SIB-200 sample: the multilingual claims, at test scale.

multilingual-e5-small (real weights) should (a) probe well in every language, (b) transfer
from English to other languages far better than the English-only all-MiniLM-L6-v2 (the
negative control), and (c) retrieve translations. The full-size numbers live in
docs/evaluation-results.md (benchmarks/evaluate_quality.py).
"""

import numpy as np
import pytest

from skmoe import MoEEmbeddingTransformer
from skmoe.datasets import load_sib200_sample
from skmoe.evaluation import bitext_report, summarize, transfer_regimes

LANGS = ["eng_Latn", "fra_Latn", "zho_Hans", "arb_Arab"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample():
    df = load_sib200_sample(languages=LANGS)
    test = df[df.split == "test"]
    # 4 test sentences per topic (28 per language), the same ids in every language.
    ids = test[test.language == "eng_Latn"].groupby("category").head(4).index_id
    return df[df.split == "train"], test[test.index_id.isin(ids)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # Shared by both tests so the test sentences are encoded once per model.
    return str(tmp_path_factory.mktemp("real-cache") / "emb.sqlite")


@pytest.fixture(scope="module")
def e5(e5_path, cache):
    return MoEEmbeddingTransformer(model=str(e5_path), prompt="query: ", device="cpu",
                                   cache=cache)


@pytest.fixture(scope="module")
def minilm(minilm_path, cache):
    return MoEEmbeddingTransformer(model=str(minilm_path), prompt="", device="cpu", cache=cache)


def _regimes(model, sample, regimes):
    tr, te = sample
    scores = transfer_regimes(tr.text, tr.category, tr.language, X_test=te.text,
                              y_test=te.category, languages_test=te.language, transformer=model,
                              regimes=regimes, samples_per_label=8, n_experiments=1)
    return summarize(scores).set_index(["regime", "test_language"])["mean"]


def test_e5_probes_every_language_and_transfers_from_english(sample, e5, minilm):
    e5_acc = _regimes(e5, sample, ("each", "en"))
    mini_acc = _regimes(minilm, sample, ("en",))
    # 7 balanced topics: guessing scores 1/7 = 0.14. Scored on 28 sentences per language.
    assert e5_acc["each"].min() >= 0.5, e5_acc["each"].to_dict()
    others = [lang for lang in LANGS if lang != "eng_Latn"]
    e5_transfer = e5_acc["en"][others].mean()
    mini_transfer = mini_acc["en"][others].mean()
    assert e5_transfer >= 0.5, e5_acc["en"].to_dict()
    assert e5_transfer > mini_transfer + 0.2, (e5_acc["en"].to_dict(), mini_acc["en"].to_dict())


def test_e5_retrieves_translations_minilm_does_not_across_scripts(sample, e5, minilm):
    _, te = sample
    pairs = [("eng_Latn", "zho_Hans"), ("eng_Latn", "arb_Arab")]
    acc_e5 = bitext_report(te.text, te.language, te.index_id, pairs=pairs, transformer=e5)
    acc_mini = bitext_report(te.text, te.language, te.index_id, pairs=pairs, transformer=minilm)
    assert set(acc_e5.n) == {28}  # chance 1/28
    assert acc_e5.accuracy.min() >= 0.9, acc_e5
    assert acc_mini.accuracy.max() <= 0.5, acc_mini
    assert np.all(acc_e5.accuracy.to_numpy() > acc_mini.accuracy.to_numpy())
