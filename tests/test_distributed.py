"""Dask integration on a real 2-process LocalCluster (slow: starts worker processes).

One cluster serves the whole module; the worker-kill test runs last because it replaces a
worker. Model: random tiny MoEs with the real XLM-R tokenizer (fast to load and run).
"""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.bag as db  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from distributed import Client, LocalCluster, futures_of  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from skmoe.distributed import (  # noqa: E402
    PreloadEncoder,
    embed_dask,
    worker_load_counts,
    worker_tag,
)
from skmoe.estimator import MoEEmbeddingTransformer  # noqa: E402

pytestmark = pytest.mark.slow


class SlowTransformer(MoEEmbeddingTransformer):
    """Sleeps before each partition so that a worker can be killed while the job runs."""

    DELAY_S = 0.4

    def transform(self, X):
        time.sleep(self.DELAY_S)
        return super().transform(X)


@pytest.fixture(scope="module")
def texts(sib200_dir: Path) -> list[str]:
    with open(sib200_dir / "eng_Latn" / "train.tsv", encoding="utf-8", newline="") as fh:
        rows = [r["text"] for r in csv.DictReader(fh, delimiter="\t")]
    # A few repeats across partitions: duplicates must come back in every position.
    return rows[:300] + rows[:20]


@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path: Path, texts: list[str]) -> MoEEmbeddingTransformer:
    return MoEEmbeddingTransformer(str(random_moe_xlmr_path)).fit(texts[:2])


@pytest.fixture(scope="module")
def reference(moe: MoEEmbeddingTransformer, texts: list[str]) -> np.ndarray:
    """The single-process transform every distributed result must equal."""
    return moe.transform(texts)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        worker_class="distributed.Nanny",
    ) as cluster, Client(cluster) as c:
        yield c


def _series(texts: list[str], npartitions: int) -> dd.Series:
    # A non-trivial index (shuffled, offset) so that order and index are both checked.
    index = np.random.default_rng(0).permutation(len(texts)) + 1000
    pdf = pd.DataFrame({"text": texts, "label": np.arange(len(texts))}, index=index).sort_index()
    return dd.from_pandas(pdf, npartitions=npartitions)


def test_dataframe_matches_single_process_and_loads_once_per_worker(client, moe, texts, reference):
    assert set(worker_load_counts(client).values()) == {0}
    ddf = _series(texts, npartitions=8)
    emb = embed_dask(ddf, moe, column="text")
    assert emb.npartitions == ddf.npartitions
    assert emb.divisions == ddf.divisions

    out = emb.compute()
    expected_order = ddf.compute()
    assert list(out.columns) == [f"embedding_{i}" for i in range(moe.n_features_out_)]
    assert out.index.equals(expected_order.index)
    assert out.dtypes.unique().tolist() == [np.dtype("float32")]
    np.testing.assert_allclose(
        out.to_numpy(), reference[expected_order["label"].to_numpy()], atol=1e-5, rtol=0
    )
    # Both workers ran tasks and each loaded the model exactly once; a second job reuses it.
    assert set(worker_load_counts(client).values()) == {1}
    embed_dask(ddf["text"], moe).compute()
    assert set(worker_load_counts(client).values()) == {1}
    # The client process never needed the model for this (it loaded it once, for `reference`).


def test_bag_returns_array_in_partition_order(client, moe, texts, reference):
    bag = db.from_sequence(texts, npartitions=5)
    arr = embed_dask(bag, moe)
    assert arr.numblocks == (5, 1)
    out = arr.compute()
    assert out.shape == reference.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=1e-5, rtol=0)
    sizes = tuple(len(list(p)) for p in dask.compute(*bag.to_delayed()))
    assert arr.compute_chunk_sizes().chunks[0] == sizes


def test_two_estimators_fitted_differently_are_two_dask_tasks(random_moe_xlmr_path, texts):
    """Same parameters, other centres: Dask tokenized the dataclass by its fields only, gave
    both graphs one name, and computing the second returned the first one's vectors."""
    from dask.base import tokenize

    a = MoEEmbeddingTransformer(str(random_moe_xlmr_path), verbose=0).fit(["hello", "world"])
    b = MoEEmbeddingTransformer(str(random_moe_xlmr_path), verbose=0).fit(texts[:40])
    assert tokenize(a) != tokenize(b)
    assert tokenize(a) == tokenize(MoEEmbeddingTransformer(str(random_moe_xlmr_path),
                                                           verbose=0).fit(["hello", "world"]))
    series = _series(texts[:40], 2)["text"]
    emb_a, emb_b = embed_dask(series, a), embed_dask(series, b)
    assert emb_a._name != emb_b._name
    got = emb_b.compute(scheduler="sync").sort_index().to_numpy()
    want = b.transform(series.compute().sort_index().tolist())
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    bag = db.from_sequence(texts[:40], npartitions=2)
    assert embed_dask(bag, a).name != embed_dask(bag, b).name


def test_unfitted_transformer_is_fitted_on_a_worker(client, random_moe_xlmr_path, texts, reference):
    unfitted = MoEEmbeddingTransformer(str(random_moe_xlmr_path))
    out = embed_dask(_series(texts, 4)["text"], unfitted).compute()
    assert not hasattr(unfitted, "n_features_out_")  # the caller's object is left alone
    assert out.shape == reference.shape


def test_per_worker_cache(client, moe, texts, reference, tmp_path):
    template = str(tmp_path / "emb-{worker}.sqlite")
    ddf = _series(texts, npartitions=6)
    first = embed_dask(ddf, moe, column="text", cache=template).compute()
    names = sorted(client.run(lambda dask_worker: str(dask_worker.name)).values())
    files = sorted(p.name for p in tmp_path.glob("emb-*.sqlite"))
    assert files == [f"emb-{n}.sqlite" for n in names]

    def stats(dask_worker):
        from skmoe.registry import get_cache

        s = get_cache(template.replace("{worker}", str(dask_worker.name))).stats()
        return s.entries, s.hits, s.misses

    before = client.run(stats)
    assert sum(e for e, _, _ in before.values()) >= len(set(texts))
    second = embed_dask(ddf, moe, column="text", cache=template).compute()
    after = client.run(stats)
    # Same partitions may land on the other worker the second time; what a worker has
    # not seen is a miss there. Every row is either a hit or a miss, and nothing changed.
    new_hits = sum(after[a][1] - before[a][1] for a in after)
    assert new_hits > 0
    # a partition computed again on the other worker may differ by fp32 rounding (1e-9 seen)
    pd.testing.assert_frame_equal(first, second, check_exact=False, rtol=1e-5, atol=1e-6)
    expected = reference[ddf.compute()["label"].to_numpy()]
    np.testing.assert_allclose(second.to_numpy(), expected, atol=1e-5, rtol=0)


def test_input_errors(random_moe_xlmr_path, moe, texts):
    ddf = _series(texts[:10], npartitions=2)
    with pytest.raises(ValueError, match="column="):
        embed_dask(ddf, moe)
    with pytest.raises(ValueError, match="Series"):
        embed_dask(ddf["text"], moe, column="text")
    with pytest.raises(TypeError, match="dask DataFrame, Series or Bag"):
        embed_dask(texts, moe)
    with pytest.raises(NotFittedError, match="fit the transformer on a sample"):
        embed_dask(ddf, MoEEmbeddingTransformer(str(random_moe_xlmr_path), output_dtype="int8"),
                   column="text")


def test_worker_tag_outside_a_worker():
    assert worker_tag() == f"local-{os.getpid()}"


def test_preload_plugin_loads_at_worker_start(client, tmp_path, random_moe_xlmr_path, texts):
    # Another folder is another registry entry: a model the workers have not loaded yet.
    other = tmp_path / "moe-copy"
    other.mkdir()
    for f in random_moe_xlmr_path.iterdir():
        (other / f.name).symlink_to(f)
    model = MoEEmbeddingTransformer(str(other)).fit(texts[:1])
    before = worker_load_counts(client)
    client.register_plugin(PreloadEncoder(model))
    after = worker_load_counts(client)
    assert {a: after[a] - before[a] for a in after} == {a: 1 for a in after}
    out = embed_dask(db.from_sequence(texts[:40], npartitions=4), model).compute()
    assert worker_load_counts(client) == after  # the tasks found the preloaded model
    np.testing.assert_allclose(out, model.transform(texts[:40]), atol=1e-5, rtol=0)
    client.unregister_worker_plugin(PreloadEncoder(model).name)


def test_worker_killed_mid_job_every_row_exactly_once(client, random_moe_xlmr_path, moe, texts, reference):
    slow = SlowTransformer(str(random_moe_xlmr_path)).fit(texts[:2])
    ddf = _series(texts, npartitions=16)
    emb = client.persist(embed_dask(ddf, slow, column="text"))
    futures = futures_of(emb)
    assert len(futures) == 16

    deadline = time.monotonic() + 120
    while sum(f.done() for f in futures) < 2:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)
    keys = {f.key for f in futures}
    processing = {a: set(ks) & keys for a, ks in client.processing().items()}
    victim = max(processing, key=lambda a: len(processing[a]))
    held = set(client.has_what().get(victim, ())) & keys
    lost = processing[victim] | held
    done_at_kill = sum(f.done() for f in futures)
    assert lost, "the victim had no work of this job"
    assert done_at_kill < len(futures), "the job finished before the kill"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)

    out = emb.compute()
    expected_order = ddf.compute()
    assert len(out) == len(texts)
    assert out.index.is_unique
    assert out.index.equals(expected_order.index)
    np.testing.assert_allclose(
        out.to_numpy(), reference[expected_order["label"].to_numpy()], atol=1e-5, rtol=0
    )
    # The dead worker is gone from the scheduler (its nanny starts a replacement).
    assert victim not in client.scheduler_info()["workers"]
