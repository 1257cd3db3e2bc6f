"""The engine: batching, order and dedupe, streaming to disk, OOM back-off, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _engine_helpers import sib200_texts

from skmoe.encoder import load_encoder, packing
from skmoe.engine import Engine, TokenRows, collate, plan_batches
from skmoe.engine.batching import Batch, pack, padding_fraction, split_batch


@pytest.fixture(scope="module")
def encoder(random_moe_xlmr_path):
    return load_encoder(random_moe_xlmr_path, device="cpu")


@pytest.fixture(scope="module")
def texts(sib200_dir):
    return sib200_texts(sib200_dir, 4)  # 128 texts, 32 languages


def one_by_one(encoder, texts, prompt=""):
    """The definition: each text alone, tokenized and pooled without any batching."""
    out = []
    for t in texts:
        ids = torch.tensor([encoder.tokenize([prompt + t])[0][0]])
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            out.append(encoder.pool(encoder(ids, mask), mask)[0].numpy())
    return np.stack(out)


# -- batching -----------------------------------------------------------------------------------


def test_plan_covers_every_row_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    batches = plan_batches(lengths, batch_size=64, max_tokens=4096)
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows.tolist()) == list(range(1000))
    for b in batches:
        assert len(b.rows) <= 64 and b.max_len == lengths[b.rows].max()
        assert b.padded_tokens <= 4096 or len(b.rows) == 1
    assert [b.max_len for b in batches] == sorted((b.max_len for b in batches), reverse=True)


def test_exact_plan_has_no_padding():
    lengths = np.array([5, 3, 5, 7, 3, 3, 7, 7, 7, 1])
    batches = plan_batches(lengths, batch_size=3, exact=True)
    assert all(len(set(lengths[b.rows])) == 1 for b in batches)
    assert padding_fraction(batches, lengths) == 0.0
    assert [len(b.rows) for b in batches] == [3, 1, 2, 3, 1]


def test_split_batch_respects_budget():
    lengths = np.array([10, 9, 9, 8, 8, 8, 2])
    parts = split_batch(Batch(np.arange(7), 10), lengths, max_tokens=25)
    assert [p.rows.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6]]
    assert [p.max_len for p in parts] == [10, 9, 8, 2]


def test_token_rows_and_collate_match_the_list_path():
    ids = [[0, 5, 6, 2], [0, 2], [0, 7, 8, 9, 10, 2], [0, 3, 2]]
    rows = TokenRows(ids)
    assert len(rows) == 4 and rows.lengths.tolist() == [4, 2, 6, 3]
    assert [r.tolist() for r in rows] == ids
    batch = Batch(np.array([2, 0, 3]), 6)
    a_ids, a_mask = collate(ids, batch, pad_id=1)
    b_ids, b_mask = collate(rows, batch, pad_id=1)
    assert torch.equal(a_ids, b_ids) and torch.equal(a_mask, b_mask)
    assert b_ids.dtype == torch.long and b_ids[1].tolist() == [0, 5, 6, 2, 1, 1]


def test_pack_lays_the_batch_rows_back_to_back():
    ids = [[0, 5, 6, 2], [0, 2], [0, 7, 8, 9, 10, 2], [0, 3, 2]]
    batch = Batch(np.array([2, 0, 3]), 6)
    flat, cu, max_len = pack(TokenRows(ids), batch)
    assert flat.dtype == torch.long and cu.dtype == torch.int32 and max_len == 6
    assert cu.tolist() == [0, 6, 10, 13]
    assert flat.tolist() == ids[2] + ids[0] + ids[3]
    padded, mask = collate(ids, batch, pad_id=1)
    assert torch.equal(flat, padded[mask.bool()])  # the real tokens of the padded batch


def test_engine_hands_the_model_packed_tokens(encoder, texts, monkeypatch):
    calls = []
    real = type(encoder).forward_packed

    def forward_packed(self, input_ids, cu_seqlens, max_seqlen):
        calls.append((input_ids.shape, cu_seqlens.dtype, max_seqlen, int(cu_seqlens[-1])))
        return real(self, input_ids, cu_seqlens, max_seqlen)

    monkeypatch.setattr(type(encoder), "forward_packed", forward_packed)
    engine = Engine(encoder, batch_size=32)
    engine.embed(texts[:40])
    assert calls and all(cu == torch.int32 and shape == (total,) for shape, cu, _, total in calls)
    assert sum(total for *_, total in calls) == engine.stats.real_tokens


def test_dense_plan_keeps_padding_under_5_percent(encoder, sib200_dir):
    """Character-sorted fixed batches waste a third of the tokens on SIB-200 (mixed scripts)."""
    texts = sib200_texts(sib200_dir, 32)  # 1,024 texts
    ids, _ = encoder.tokenize(["classification: " + t for t in texts])
    lengths = np.array([len(r) for r in ids])
    ours = plan_batches(lengths, 128, 8192, max_padding=0.05)
    assert padding_fraction(ours, lengths) <= 0.05
    assert len(ours) < 40  # still big batches: 1,024 texts in few forward passes
    by_chars = np.argsort([-len(t) for t in texts], kind="stable")
    standard = [Batch(r, int(lengths[r].max())) for r in np.array_split(by_chars, len(texts) // 32)]
    assert padding_fraction(standard, lengths) > 0.25


def test_moe_model_computes_real_tokens_only(encoder, texts, monkeypatch):
    """Projections, MLPs, experts and (on CPU) attention see the real tokens, no padding."""
    rows_in = []
    hooks = [m.register_forward_hook(lambda m, i, o: rows_in.append(i[0].shape[0]))
             for name, m in encoder.named_modules() if name.endswith(("Wqkv", "fc1"))]
    attended = []  # tokens that went through attention, per call
    real_attend = packing._attend_runs

    def attend_runs(qkv, runs, n_head, head_dim):
        attended.append(sum(rows * length for _, rows, length in runs))
        assert attended[-1] == qkv.shape[0]  # runs cover the packed real tokens exactly
        return real_attend(qkv, runs, n_head, head_dim)

    monkeypatch.setattr(packing, "_attend_runs", attend_runs)
    try:
        engine = Engine(encoder, batch_size=128)
        engine.embed(texts)
    finally:
        for h in hooks:
            h.remove()
    real = engine.stats.real_tokens
    assert engine.stats.padded_tokens > real  # the batch layout does have padding ...
    n_layers, n_dense = encoder.moe_config.n_layer, 2  # tiny config: MoE on layers 1 and 3
    assert sum(rows_in) == real * (n_layers + n_dense)  # every Wqkv and every dense fc1
    assert sum(attended) == real * n_layers  # ... but no padded token is ever computed


# -- results ------------------------------------------------------------------------------------


def test_embed_matches_one_by_one_in_input_order_with_duplicates(encoder, texts):
    sample = texts[:40] + texts[:5]  # duplicates
    engine = Engine(encoder, batch_size=16)
    got = engine.embed(sample, "classification: ")
    want = one_by_one(encoder, sample, "classification: ")
    assert got.shape == (45, encoder.embedding_dim) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert engine.stats.texts == 40  # the 5 duplicates were encoded once
    assert engine.stats.real_tokens == sum(len(r) for r in encoder.tokenize(
        ["classification: " + t for t in texts[:40]])[0])


def test_embed_empty(encoder):
    assert Engine(encoder).embed([]).shape == (0, encoder.embedding_dim)


def test_stats_count_batches_and_layout_padding(encoder, texts):
    engine = Engine(encoder, batch_size=32)
    engine.embed(texts)
    s = engine.stats
    assert s.forward_calls == len(s.batch_sizes) == 4 and sum(s.batch_sizes) == len(texts)
    assert s.padding_fraction == pytest.approx(1 - s.real_tokens / s.padded_tokens)


def test_dense_backbone_batches_keep_padding_under_5_percent(e5_path, sib200_dir):
    texts = sib200_texts(sib200_dir, 4)  # 128 texts
    engine = Engine(load_encoder(e5_path, device="cpu"))
    engine.embed(texts, "query: ")
    assert engine.stats.padding_fraction <= 0.05
    assert engine.stats.forward_calls <= 20


def test_embed_to_file_and_array_equal_embed(encoder, texts, tmp_path):
    engine = Engine(encoder)
    want = engine.embed(texts)
    path = tmp_path / "vectors.npy"
    assert engine.embed_to(path, texts, chunk_size=50) == path
    # other chunks, other batch-mates: fp32 matmul blocking differs at 1e-7
    np.testing.assert_allclose(np.load(path), want, rtol=0, atol=1e-6)
    mm = np.lib.format.open_memmap(tmp_path / "mm.npy", mode="w+", dtype=np.float32,
                                   shape=want.shape)
    engine.embed_to(mm, texts, chunk_size=7)
    np.testing.assert_allclose(np.asarray(mm), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        engine.embed_to(np.empty((3, 3), np.float32), texts)
    # a failure part way (a full disk, Ctrl-C) left a cut .npy under the final name
    chunks = engine._iter_chunks

    def stops(*args, **kwargs):
        yield next(chunks(*args, **kwargs))
        raise OSError(28, "No space left on device")

    engine._iter_chunks = stops
    with pytest.raises(OSError, match="No space"):
        engine.embed_to(tmp_path / "cut.npy", texts, chunk_size=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mm.npy", "vectors.npy"]


def test_iter_embed_yields_chunks_in_order(encoder, texts):
    engine = Engine(encoder)
    starts = []
    parts = []
    for start, vectors in engine.iter_embed(texts, chunk_size=50):
        starts.append(start)
        parts.append(vectors)
    assert starts == [0, 50, 100] and [len(p) for p in parts] == [50, 50, 28]
    np.testing.assert_allclose(np.concatenate(parts), engine.embed(texts), rtol=0, atol=1e-6)


def test_progress_is_called_per_batch(encoder, texts):
    seen = []
    Engine(encoder, batch_size=20, progress=seen.append).embed(texts[:50])
    assert sum(seen) == 50 and len(seen) == 3


# -- out of memory ------------------------------------------------------------------------------


def test_oom_halves_the_batch_and_results_are_unchanged(encoder, texts, monkeypatch):
    want = Engine(encoder, batch_size=64).embed(texts)
    real_forward = type(encoder).forward_packed
    seen = []

    def forward_packed(self, input_ids, cu_seqlens, max_seqlen):
        rows = len(cu_seqlens) - 1
        seen.append(rows)
        if rows > 20:  # a "GPU" that holds at most 20 rows
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, input_ids, cu_seqlens, max_seqlen)

    monkeypatch.setattr(type(encoder), "forward_packed", forward_packed)
    engine = Engine(encoder, batch_size=64)
    got = engine.embed(texts)
    assert np.abs(got - want).max() < 1e-5
    assert engine.stats.oom_retries >= 2
    assert max(engine.stats.batch_sizes) <= 20 and sum(engine.stats.batch_sizes) == len(texts)
    assert engine.stats.oom_retries == sum(1 for n in seen if n > 20)
    # after the first failures the budget is lowered: the second 64-row batch is split before
    # it is tried, so it never fails whole
    assert seen.count(64) == 1


def test_oom_on_a_single_row_is_raised(encoder, monkeypatch):
    def forward_packed(self, input_ids, cu_seqlens, max_seqlen):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(type(encoder), "forward_packed", forward_packed)
    with pytest.raises(torch.OutOfMemoryError):
        Engine(encoder).embed(["one text"])


_CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")


def test_a_cpu_out_of_memory_halves_the_batch_too(encoder, texts, monkeypatch):
    """torch's CPU allocator raises a plain RuntimeError, which only CUDA's OOM class was caught
    as: a batch too large for the machine's memory stopped the run, and the CLI called it a bug
    in skmoe. It halves the batch as on a GPU; one text too large is a MemoryError naming it."""
    want = Engine(encoder, batch_size=64).embed(texts)
    real_forward = type(encoder).forward_packed

    def forward_packed(self, input_ids, cu_seqlens, max_seqlen):
        if len(cu_seqlens) - 1 > 20:
            raise RuntimeError(_CPU_OOM)
        return real_forward(self, input_ids, cu_seqlens, max_seqlen)

    monkeypatch.setattr(type(encoder), "forward_packed", forward_packed)
    engine = Engine(encoder, batch_size=64)
    np.testing.assert_allclose(engine.embed(texts), want, rtol=0, atol=1e-5)
    assert engine.stats.oom_retries >= 2 and max(engine.stats.batch_sizes) <= 20

    def always(self, input_ids, cu_seqlens, max_seqlen):
        raise RuntimeError(_CPU_OOM)

    monkeypatch.setattr(type(encoder), "forward_packed", always)
    with pytest.raises(MemoryError, match=r"out of memory on cpu embedding one text of \d+ "
                                          r"tokens \(.*DefaultCPUAllocator.*lower max_length"):
        Engine(encoder).embed(["one text"])

    def other(self, input_ids, cu_seqlens, max_seqlen):
        raise RuntimeError("shape mismatch")  # a bug stays a bug: raised as it is

    monkeypatch.setattr(type(encoder), "forward_packed", other)
    with pytest.raises(RuntimeError, match="shape mismatch") as caught:
        Engine(encoder).embed(["a", "b"])
    assert type(caught.value) is RuntimeError


# -- warnings point at the user's line ----------------------------------------------------------


def test_truncation_warning_names_the_callers_line(encoder, random_moe_xlmr_path):
    from skmoe.engine.runner import TruncationWarning
    from skmoe.estimator import MoEEmbeddingTransformer

    long_text = "word " * 600
    with pytest.warns(TruncationWarning) as caught:
        Engine(encoder).embed([long_text, "short"])
    assert caught[0].filename == __file__
    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), max_length=16).fit([])
    with pytest.warns(TruncationWarning, match="maximum length") as caught:
        est.transform([long_text])  # estimator -> engine generator -> tokenizer: still this line
    assert caught[0].filename == __file__


def test_warn_if_truncated_tokenizes_only_texts_that_could_be_too_long(encoder, monkeypatch):
    import skmoe.engine.runner as runner_module
    from skmoe.engine.runner import TruncationWarning

    seen = []
    real = runner_module.tokenize

    def spy(tokenizer, texts, max_length):
        seen.append(list(texts))
        return real(tokenizer, texts, max_length)

    monkeypatch.setattr(runner_module, "tokenize", spy)
    engine = Engine(encoder, max_length=32)
    assert engine.warn_if_truncated(["short", "also short"], "query: ") == 0
    assert seen == []  # 32 tokens cannot come from so few bytes
    long_ok, long_cut = "é" * 14, "word " * 40  # 28 bytes (could be long; is not), and cut
    with pytest.warns(TruncationWarning, match="1 text"):
        assert engine.warn_if_truncated(["short", long_ok, long_cut]) == 1
    assert seen == [[long_ok, long_cut]]
    expands = "\ufdfa" * 8  # 24 bytes, but 264 after NFKC: 34 XLM-R tokens
    with pytest.warns(TruncationWarning, match="1 text"):
        assert engine.warn_if_truncated(["short", expands]) == 1
