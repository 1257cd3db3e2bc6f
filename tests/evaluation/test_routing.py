"""routing_stats on a random MoE checkpoint (real XLM-R tokenizer), checked against a
token-by-token count made directly with ``capture_routing``."""

import numpy as np
import pandas as pd
import pytest
import torch

import skmoe
from skmoe.evaluation import routing_stats

TEXTS = ["The cat sat on the mat.", "Le chat est assis.", "Der Hund bellt laut im Garten.",
         "猫はマットの上に座った。", "A much longer English sentence with quite a few more tokens."]
GROUPS = ["en", "fr", "de", "ja", "en"]


@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path):
    return skmoe.load_encoder(random_moe_xlmr_path, device="cpu")


def _by_hand(encoder, texts, groups, prefix):
    """Per (layer, group): expert counts, weight sums and tokens, one text per forward."""
    cfg = encoder.moe_config
    E = cfg.num_experts
    out = {}
    tokens = {}
    for text, g in zip(texts, groups, strict=True):
        ids, _ = encoder.tokenize([prefix + text])
        tokens[g] = tokens.get(g, 0) + len(ids[0])
        with skmoe.capture_routing(encoder) as recs, torch.inference_mode():
            encoder(torch.tensor(ids), torch.ones(1, len(ids[0]), dtype=torch.long))
        for rec in recs:
            c, w = out.setdefault((rec.layer, g), (np.zeros(E), np.zeros(E)))
            for e, wt in zip(rec.top_experts.reshape(-1).tolist(),
                             rec.top_weights.reshape(-1).tolist(), strict=True):
                c[e] += 1
                w[e] += wt
    return out, tokens


@pytest.mark.slow
def test_counts_add_up_and_match_a_token_by_token_count(moe):
    stats = routing_stats(moe, TEXTS, GROUPS, prompt="search_query: ", batch_size=2)
    cfg = moe.moe_config
    K, E = cfg.moe_top_k, cfg.num_experts
    assert stats.top_k == K and stats.num_experts == E and stats.prompt == "search_query: "
    assert sorted(stats.experts.layer.unique()) == cfg.moe_layers
    hand, tokens = _by_hand(moe, TEXTS, GROUPS, "search_query: ")
    # tokens include the prompt and the special tokens
    assert stats.tokens.to_dict() == tokens
    per = stats.experts.groupby(["layer", "group"])
    for (layer, g), part in per:
        part = part.sort_values("expert")
        assert part["count"].sum() == tokens[g] * K  # tokens x top-k
        c, w = hand[(layer, g)]
        np.testing.assert_array_equal(part["count"].to_numpy(), c)
        np.testing.assert_allclose(part["share"].to_numpy(), c / (tokens[g] * K))
        expect_w = np.where(c > 0, w / np.maximum(c, 1), np.nan)
        np.testing.assert_allclose(part["mean_weight"].to_numpy(), expect_w, rtol=1e-5)
        assert part["share"].sum() == pytest.approx(1.0)
        assert part["mean_prob"].sum() == pytest.approx(1.0, abs=1e-5)
    assert list(stats.experts.columns) == ["layer", "group", "expert", "count", "share",
                                           "mean_weight", "mean_prob"]


def test_divergence_is_jensen_shannon_of_shares(moe):
    stats = routing_stats(moe, TEXTS + TEXTS[:2], GROUPS + ["en2", "en2"], prompt="")
    ex = stats.experts
    for _, row in stats.divergence.iterrows():
        p = ex[(ex.layer == row.layer) & (ex.group == row.group_a)].sort_values("expert").share
        q = ex[(ex.layer == row.layer) & (ex.group == row.group_b)].sort_values("expert").share
        p, q = p.to_numpy(), q.to_numpy()
        m = (p + q) / 2

        def kl(a, b):
            nz = a > 0
            return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

        assert row.js_divergence == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m), abs=1e-12)
        assert 0.0 <= row.js_divergence <= 1.0
    n_groups = len(stats.tokens)
    assert len(stats.divergence) == len(moe.moe_config.moe_layers) * n_groups * (n_groups - 1) / 2
    mat = stats.divergence_matrix()
    assert list(mat.index) == list(stats.tokens.index) and np.allclose(mat, mat.T)
    assert np.allclose(np.diag(mat), 0.0)
    # Same texts in two groups -> identical distributions -> divergence 0.
    same = routing_stats(moe, TEXTS[:2] * 2, ["a", "a", "b", "b"], prompt="")
    assert same.divergence.js_divergence.abs().max() == pytest.approx(0.0, abs=1e-12)
    assert same.divergence_matrix(layer=moe.moe_config.moe_layers[0]).loc["a", "b"] == 0.0


def test_accepts_objects_with_get_encoder_and_their_prompt(moe, random_moe_xlmr_path):
    class Wrapper:
        def get_encoder(self):
            return moe

        def get_params(self, deep=True):
            return {"prompt_name": "Clustering", "prompt": None}

    stats = routing_stats(Wrapper(), TEXTS[:2])
    assert stats.prompt == "clustering: "
    assert list(stats.tokens.index) == ["all"]
    from skmoe import MoEEmbeddingTransformer

    est = MoEEmbeddingTransformer(model=str(random_moe_xlmr_path), device="cpu")
    s2 = routing_stats(est, TEXTS[:2], prompt="")
    s3 = routing_stats(moe, TEXTS[:2], prompt="")
    pd.testing.assert_frame_equal(s2.experts, s3.experts)


def test_routing_counts_the_tokens_the_embedding_used(moe, random_moe_xlmr_path):
    from skmoe import MoEEmbeddingTransformer
    from skmoe.engine import TruncationWarning

    long_text = "word " * 60
    est = MoEEmbeddingTransformer(model=str(random_moe_xlmr_path), device="cpu", max_length=16)
    with pytest.warns(TruncationWarning, match="exceed the maximum length \\(16 tokens\\)"):
        assert routing_stats(est, [long_text]).tokens.iloc[0] == 16  # the estimator's limit
    with pytest.warns(TruncationWarning):  # cut as for the embeddings, and said so
        assert routing_stats(moe, [long_text], max_length=16).tokens.iloc[0] == 16
    assert routing_stats(moe, [long_text]).tokens.iloc[0] > 60  # the model's own limit


def test_text_tokens_leave_out_specials_and_the_prompt(moe):
    texts, groups = TEXTS[:4], ["a", "a", "b", "b"]
    every = routing_stats(moe, texts, groups, prompt="classification: ")
    text = routing_stats(moe, texts, groups, prompt="classification: ", tokens="text")
    n_prompt = len(moe.tokenizer("classification:", add_special_tokens=False)["input_ids"])
    assert n_prompt >= 2
    assert (every.tokens - text.tokens).tolist() == [2 * (2 + n_prompt)] * 2  # per text
    # the same forward passes: text-token counts are a part of every count
    both = every.experts.merge(text.experts, on=["layer", "group", "expert"])
    assert (both.count_x >= both.count_y).all()
    chosen = text.experts.groupby(["layer", "group"])["count"].sum()  # top_k per counted token
    for (_, group), n in chosen.items():
        assert n == text.tokens[group] * text.top_k
    no_prompt = routing_stats(moe, texts, groups, prompt="", tokens="text")
    assert (no_prompt.tokens == every.tokens - 2 * (2 + n_prompt)).all()
    with pytest.raises(ValueError, match="tokens must be 'all' or 'text'"):
        routing_stats(moe, texts, tokens="words")


def test_routing_input_edge_cases(moe):
    one = routing_stats(moe, TEXTS[:2])  # a single group: nothing to diverge from
    assert one.divergence_matrix().to_numpy().tolist() == [[0.0]]
    with pytest.raises(ValueError, match="layer 0 is not an MoE layer"):
        one.divergence_matrix(layer=0)
    with pytest.raises(ValueError, match="at least one text"):
        routing_stats(moe, [])
    with pytest.raises(ValueError, match="groups has a missing value .* at row 1"):
        routing_stats(moe, TEXTS[:2], groups=["a", float("nan")])


def test_dense_model_and_wrong_objects_raise(minilm_path):
    dense = skmoe.load_encoder(minilm_path, device="cpu")
    with pytest.raises(TypeError, match="dense model"):
        routing_stats(dense, ["hello"])
    with pytest.raises(TypeError, match="SentenceEncoder"):
        routing_stats(object(), ["hello"])


def test_split_half_measures_each_groups_noise_without_changing_the_totals(moe):
    texts = TEXTS * 2 + ["The cat sat on the mat."] * 6 + ["Solo."]
    groups = GROUPS * 2 + ["same"] * 6 + ["one"]
    plain = routing_stats(moe, texts, groups, prompt="")
    noisy = routing_stats(moe, texts, groups, prompt="", split_half=True)
    assert plain.split_half is None
    pd.testing.assert_frame_equal(plain.experts, noisy.experts)  # halves sum to the group
    pd.testing.assert_frame_equal(plain.divergence, noisy.divergence)
    half = noisy.split_half.set_index(["layer", "group"])["js_divergence"]
    assert len(half) == len(moe.moe_config.moe_layers) * len(plain.tokens)
    same, one = half.xs("same", level="group"), half.xs("one", level="group")
    assert (same.abs() < 1e-12).all()  # one text six times: the halves route alike
    assert one.isna().all()  # one text: no second half
    mixed = half.xs("en", level="group")  # four texts, two different ones
    assert (mixed >= 0).all() and (mixed > 1e-6).any()
    again = routing_stats(moe, texts, groups, prompt="", split_half=True)
    pd.testing.assert_frame_equal(noisy.split_half, again.split_half)  # seeded


def test_routing_names_its_precision_empty_groups_and_a_prompt_without_room(moe, random_moe_xlmr_path):
    assert routing_stats(moe, TEXTS[:1]).precision == "float32"
    est = skmoe.MoEEmbeddingTransformer(model=str(random_moe_xlmr_path), device="cpu", dtype="int8")
    assert routing_stats(est, TEXTS[:1], prompt="").precision.startswith("int8/")
    with pytest.warns(RuntimeWarning, match=r"no token counted for group\(s\) \['empty'\]"):
        stats = routing_stats(moe, ["", " ", TEXTS[0]], ["empty", "empty", "en"], prompt="",
                              tokens="text")
    assert stats.experts.loc[stats.experts.group == "empty", "share"].isna().all()
    assert stats.divergence.js_divergence.isna().all()
    for tokens in ("all", "text"):  # refused as for the embeddings (every row the same)
        with pytest.raises(ValueError, match=r"max_length=4 leaves no room for text: the prompt "
                                             r"takes \d tokens"):
            routing_stats(moe, ["Hello"], prompt="classification: ", max_length=4, tokens=tokens)
