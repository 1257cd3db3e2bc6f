"""capture_routing and routing_stats on one encoder shared by threads and nested blocks.

The registry shares one encoder object among all estimators and threads of a process. Before,
``capture_routing`` set one list as the sink of every MoE layer and set it back to ``None`` on
exit: a second block (another thread's, or a nested one) took every record over, and the first
block to end switched recording off for all. Each interleaving below is forced with barriers
and events (bounded by timeouts), so that what failed happens on every run.
"""

from __future__ import annotations

import contextvars
import copy
import threading
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

import skmoe
from skmoe.encoder import routing_capture
from skmoe.encoder.packing import cu_seqlens_of
from skmoe.engine import Engine
from skmoe.evaluation import routing_stats

TIMEOUT_S = 60
TEXTS_A = ["The cat sat on the mat.", "A much longer English sentence with quite a few more "
           "tokens than the others.", "Dogs bark.", "It is raining again today."]
TEXTS_B = ["Hello there.", "Tea or coffee?", "The train leaves at noon from platform nine."]


@pytest.fixture(scope="module")
def enc(fast_moe):
    return skmoe.load_encoder(fast_moe, device="cpu")


def forward(enc, text):
    """One forward call of the encoder on one text."""
    ids, _ = enc.tokenize([text])
    with torch.inference_mode():
        enc(torch.tensor(ids), torch.ones(1, len(ids[0]), dtype=torch.long))


def run_in_thread(target, *args, **kwargs):
    """Start ``target(*args, **kwargs)`` in a new thread: (thread, dict of its outcome)."""
    out = {}

    def work():
        try:
            out["value"] = target(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            out["error"] = error

    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


def result_of(thread, out):
    """What the thread's target returned (raised again here if it raised)."""
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "thread still running"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_two_threads_measuring_at_once_each_count_their_own_tokens(enc):
    """Before: both blocks were open when the forwards ran (forced here), every record went to
    the block entered last, and the other call returned all-zero expert counts without a word
    (the audit's other run raised "router saw N tokens, expected M")."""
    ref_a = routing_stats(enc, TEXTS_A, batch_size=2)
    ref_b = routing_stats(enc, TEXTS_B, batch_size=2)
    both_open = threading.Barrier(2, timeout=TIMEOUT_S)
    waited = set()

    def hold_first_forward(module, args):  # each thread's first forward, its capture open
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_open.wait()

    handle = enc.backbone.encoder.layers[0].register_forward_pre_hook(hold_first_forward)
    try:
        a = run_in_thread(routing_stats, enc, TEXTS_A, batch_size=2)
        b = run_in_thread(routing_stats, enc, TEXTS_B, batch_size=2)
        got_a, got_b = result_of(*a), result_of(*b)
    finally:
        handle.remove()
    for got, ref in ((got_a, ref_a), (got_b, ref_b)):
        pd.testing.assert_frame_equal(got.experts, ref.experts)
        pd.testing.assert_series_equal(got.tokens, ref.tokens)
        assert (got.experts.groupby("layer")["count"].sum() == got.tokens.iloc[0] * got.top_k).all()


def test_routing_stats_ignores_a_thread_embedding_with_the_same_encoder(enc):
    """Before: another thread's forward pass, run between routing_stats' own forward and its
    count (forced here), left its records in routing_stats' list: "layer 1: router saw N
    tokens, expected M" (the audit: 3 of 3 runs)."""
    ref = routing_stats(enc, TEXTS_A, batch_size=2)
    measured, embedded = threading.Event(), threading.Event()
    role = threading.local()

    def hold_after_forward(module, args, output):  # routing_stats' first forward is done
        if getattr(role, "measuring", False) and not measured.is_set():
            measured.set()
            assert embedded.wait(TIMEOUT_S), "the embedding thread did not run"

    def measure():
        role.measuring = True
        return routing_stats(enc, TEXTS_A, batch_size=2)

    def embed_meanwhile():
        assert measured.wait(TIMEOUT_S), "routing_stats did not run"
        try:
            return Engine(enc).embed(["Another thread embeds this rather long text meanwhile, "
                                      "with its own forward pass."])
        finally:
            embedded.set()

    handle = enc.backbone.encoder.layers[-1].register_forward_hook(hold_after_forward)
    try:
        embedding = run_in_thread(embed_meanwhile)
        got = result_of(*run_in_thread(measure))
        vectors = result_of(*embedding)
    finally:
        handle.remove()
    assert measured.is_set() and embedded.is_set()
    pd.testing.assert_frame_equal(got.experts, ref.experts)
    assert vectors.shape == (1, enc.embedding_dim) and np.isfinite(vectors).all()


def test_nested_blocks_both_record_and_the_outer_goes_on(enc):
    """Before: the inner block took the records over and its exit switched recording off, so
    the outer block missed the inner block's forwards and every forward after it, and a
    routing_stats call inside a block switched the block off the same way."""
    n = len(enc.moe_config.moe_layers)
    with skmoe.capture_routing(enc) as outer:
        forward(enc, "one")
        with skmoe.capture_routing(enc) as inner:
            forward(enc, "two words")
        forward(enc, "three words here")
    assert len(inner) == n and len(outer) == 3 * n
    assert all(a is b for a, b in zip(outer[n:2 * n], inner, strict=True))  # the same records
    assert [rec.top_experts.shape[0] for rec in outer[::n]] == [3, 4, 5]  # <s> ... </s>

    ref = routing_stats(enc, TEXTS_B)
    with skmoe.capture_routing(enc) as records:
        forward(enc, "one")
        got = routing_stats(enc, TEXTS_B)
        after_stats = len(records)
        forward(enc, "one")
    pd.testing.assert_frame_equal(got.experts, ref.experts)
    assert after_stats > n  # routing_stats' forwards reached the enclosing block
    assert len(records) == after_stats + n  # and the block still records after it


def test_a_block_left_out_of_order_ends_only_itself(enc):
    """Blocks held open in generators may end in any order. Before: ending the first one
    switched every block off."""
    n = len(enc.moe_config.moe_layers)

    def held():
        with skmoe.capture_routing(enc) as records:
            yield records

    first, second = held(), held()
    a, b = next(first), next(second)
    first.close()
    forward(enc, "after the first block ended")
    assert len(a) == 0 and len(b) == n
    second.close()
    forward(enc, "after both ended")
    assert len(b) == n
    assert all(m.routing_sink is None for m in enc.modules() if hasattr(m, "routing_sink"))


def test_other_threads_forwards_stay_out_unless_they_run_in_the_callers_context(enc, monkeypatch):
    """A capture follows its call: a forward in another thread is not recorded, and builds no
    record (no copy to the host); work run in a copy of the caller's context
    (``contextvars.copy_context().run``) is, while the block is open. Before: every forward
    anywhere went to the last block opened."""
    n = len(enc.moe_config.moe_layers)
    built = []
    real_record = routing_capture.RoutingRecord

    def counted(*args):
        built.append(threading.get_ident())
        return real_record(*args)

    monkeypatch.setattr(routing_capture, "RoutingRecord", counted)
    with skmoe.capture_routing(enc) as records:
        result_of(*run_in_thread(forward, enc, "another thread"))
        assert records == [] and built == []
        context = contextvars.copy_context()
        result_of(*run_in_thread(context.run, forward, enc, "the caller's context"))
        assert len(records) == n and len(built) == n
    result_of(*run_in_thread(context.run, forward, enc, "after the block"))  # closed
    assert len(records) == n and len(built) == n


def test_a_block_open_in_another_thread_leaves_a_forward_without_host_sync(enc):
    """The meta device refuses every read back to the host. While another thread holds a block
    open on the same model, a forward of this thread completes on it: no record, no copy.
    Before: the other thread's block copied this forward's router output to the host (raised
    on meta: a sync on a GPU)."""
    model = copy.deepcopy(enc.backbone).to(torch.bfloat16)
    for part in model.replaceable_parts():
        if part.kind == "router":
            part.module.float()
    model = model.to("meta")
    opened, done = threading.Event(), threading.Event()

    def hold_open():
        with skmoe.capture_routing(model) as records:
            opened.set()
            assert done.wait(TIMEOUT_S), "the forward did not run"
        return records

    holder = run_in_thread(hold_open)
    try:
        assert opened.wait(TIMEOUT_S)
        lengths = [5, 3, 1]
        cu = cu_seqlens_of(lengths).to("meta")
        with torch.inference_mode():
            hidden = model.forward_packed(torch.zeros(9, dtype=torch.long, device="meta"), cu, 5)
    finally:
        done.set()
    assert result_of(*holder) == []
    assert hidden.shape == (9, model.hidden_size) and hidden.device.type == "meta"


def test_routing_stats_refuses_a_forward_whose_records_it_did_not_get(enc, monkeypatch):
    """When a forward pass's records do not reach routing_stats' own list (what another
    thread's capture used to cause), it raises. Before: it counted the empty list and returned
    all-zero expert counts for non-zero tokens, without a word."""

    @contextmanager
    def capture_nothing(model):
        yield []

    monkeypatch.setattr(skmoe.encoder, "capture_routing", capture_nothing)
    with pytest.raises(RuntimeError, match=r"left records of layers \[\], expected one per MoE"):
        routing_stats(enc, TEXTS_B)


def test_blocks_nest_and_stay_with_their_thread_under_compiled_layers(enc):
    """compile_layers: the capture's check runs eagerly (dynamo cannot read the context), the
    numbers are those of the eager model, and blocks nest as they do eagerly. Before: the
    compiled layers recorded into the last block opened only (the outer block missed the
    inner block's forwards and every forward after it)."""
    model = copy.deepcopy(enc.backbone).to(torch.bfloat16)  # the sync-free path a GPU compiles
    for part in model.replaceable_parts():
        if part.kind == "router":
            part.module.float()
    model.attention = "padded"
    n = len(model.config.moe_layers)
    ids = torch.randint(2, 1000, (8,), generator=torch.Generator().manual_seed(0))
    cu = cu_seqlens_of([5, 3])

    def run():
        with torch.inference_mode():
            return model.forward_packed(ids, cu, 5)

    with skmoe.capture_routing(model) as eager_records:
        eager = run()
    torch._dynamo.reset()
    model.compile_layers(backend="eager")
    try:
        assert torch.equal(run(), eager)  # compiled, no capture
        with skmoe.capture_routing(model) as outer:
            run()
            with skmoe.capture_routing(model) as inner:
                assert torch.equal(run(), eager)
                result_of(*run_in_thread(run))  # another thread: not recorded
            run()
    finally:
        torch._dynamo.reset()
    assert len(inner) == n and len(outer) == 3 * n
    for got, want in zip(outer, eager_records * 3, strict=True):
        assert got.layer == want.layer and torch.equal(got.top_experts, want.top_experts)
