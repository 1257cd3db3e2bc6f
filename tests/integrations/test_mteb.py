"""MTEB adapter: full offline ``mteb.evaluate`` runs on local in-memory tasks.

A SIB-200 English classification task built here (real e5 weights; MTEB's 8-shot protocol),
and MTEB's own mock tasks (in-memory, no downloads) for prompt routing by task type.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")

from _sib200 import read_sib200  # noqa: E402
from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.mocks import (  # noqa: E402
    MockClassificationTask,
    MockClusteringTask,
    MockRetrievalTask,
    MockSTSTask,
)
from mteb.models import EncoderProtocol  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from skmoe.estimator import MoEEmbeddingTransformer  # noqa: E402
from skmoe.integrations.mteb import SkmoeMTEBEncoder, as_mteb_encoder  # noqa: E402


def _sib200_task(sib200_dir, n_train: int = 140) -> AbsTaskClassification:
    train_texts, train_cats = read_sib200(sib200_dir, "train", n_train)
    # SIB-200's test.tsv is ordered by category; dev (99 rows, all 7 classes) is the test here.
    test_texts, test_cats = read_sib200(sib200_dir, "dev")
    labels = sorted(set(train_cats))

    class LocalSIB200(AbsTaskClassification):
        metadata = TaskMetadata(
            type="Classification",
            name="SkmoeLocalSIB200Eng",
            main_score="accuracy",
            description="English SIB-200 topic classification; a local subset for tests.",
            reference="https://huggingface.co/datasets/Davlan/sib200",
            dataset={"path": "NA", "revision": "NA"},
            category="t2c",
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            date=("2023-01-01", "2023-12-31"),
            dialect=["Written"],
            domains=[],
            task_subtypes=["Topic classification"],
            license="cc-by-sa-4.0",
            annotations_creators="expert-annotated",
            modalities=["text"],
            sample_creation="found",
            bibtex_citation="",
        )

        def load_data(self, num_proc=None, **kwargs):
            def split(texts, cats):
                return Dataset.from_dict({"text": texts, "label": [labels.index(c) for c in cats]})

            self.dataset = DatasetDict(
                {"train": split(train_texts, train_cats), "test": split(test_texts, test_cats)}
            )
            self.data_loaded = True

    return LocalSIB200()


def _evaluate(encoder, tasks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ill-defined-precision warnings on tiny tasks
        # cache=None: no result files under ~/.cache/mteb, and nothing is skipped as "done".
        return mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False)


def test_adapter_satisfies_the_encoder_protocol(e5_path):
    encoder = as_mteb_encoder(MoEEmbeddingTransformer(str(e5_path), prompt="query: "))
    assert isinstance(encoder, EncoderProtocol)
    meta = encoder.mteb_model_meta
    assert meta.name == "local/me5-small-q4deq"
    assert meta.embed_dim == 384
    assert meta.revision == encoder.transformer.get_encoder().source.fingerprint


def test_adapter_gives_the_models_unit_vectors(e5_path):
    texts = ["a cat sat on the mat", "markets fell sharply", "le chat dort"]

    def encode(transformer):
        return SkmoeMTEBEncoder(transformer, prompts={"STS": "query: "}).encode(
            [{"text": texts}], task_metadata=MockSTSTask().metadata, hf_split="test",
            hf_subset="default")

    default = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", truncate_dim=256)
    raw = default.set_params(normalize=False).embed(texts)  # pooled, truncated, unscaled
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(encode(default), raw, rtol=1e-5)  # normalize=False: as asked
    for normalize in (1.25, "rms", "l2"):  # lengths for sklearn heads are not MTEB's
        out = encode(default.set_params(normalize=normalize))
        assert out.shape == (3, 256)
        np.testing.assert_allclose(out, unit, atol=1e-6)


@pytest.mark.slow
def test_mteb_evaluate_sib200_offline_and_reuses_the_cache(e5_path, sib200_dir, tmp_path):
    cache = tmp_path / "mteb.sqlite"
    transformer = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", cache=str(cache))
    encoder = SkmoeMTEBEncoder(transformer)
    task = _sib200_task(sib200_dir)

    first = _evaluate(encoder, [task])
    result = first.task_results[0]
    accuracy = result.get_score()
    print(f"MTEB SkmoeLocalSIB200Eng accuracy (e5-small, 8-shot x10) = {accuracy:.3f}")
    assert accuracy > 0.45  # 7 classes: chance is about 0.14-0.25 (majority class)
    stats = transformer.cache_stats()
    assert stats.misses > 0 and stats.entries == stats.misses

    # A second evaluation is served from the skmoe cache: no new misses, every text a hit.
    second = _evaluate(encoder, [_sib200_task(sib200_dir)])
    again = transformer.cache_stats()
    assert again.misses == stats.misses
    assert again.hits - stats.hits == stats.misses
    assert second.task_results[0].get_score() == pytest.approx(accuracy)


def test_prompts_follow_the_task_type(random_moe_xlmr_path, tmp_path):
    cache = tmp_path / "prompts.sqlite"
    transformer = MoEEmbeddingTransformer(str(random_moe_xlmr_path), cache=str(cache))
    encoder = SkmoeMTEBEncoder(transformer)
    md = {t.metadata.type: t.metadata for t in (
        MockClassificationTask(), MockClusteringTask(), MockSTSTask(), MockRetrievalTask()
    )}
    assert encoder.get_prompt(md["Classification"]) == "classification: "
    assert encoder.get_prompt(md["Clustering"]) == "clustering: "
    assert encoder.get_prompt(md["STS"]) == "classification: "
    assert encoder.get_prompt(md["Retrieval"], PromptType.query) == "search_query: "
    assert encoder.get_prompt(md["Retrieval"], PromptType.document) == "search_document: "
    # no key for bitext mining (MTEB passes no side): MTEB's nomic wrapper takes the document
    # prompt; this adapter took the transformer's "classification: "
    bitext = MockClassificationTask().metadata.model_copy(
        update={"name": "SomeBitextMining", "type": "BitextMining"})
    assert encoder.get_prompt(bitext) == "search_document: "

    results = _evaluate(encoder, [MockClassificationTask(), MockClusteringTask(),
                                  MockRetrievalTask()])
    assert len(results.task_results) == 3
    # One cache namespace per prompt actually used: classification, clustering, query, document.
    assert transformer.cache_stats().namespaces == 4

    # encode() is the transformer's own output for that prompt.
    batches = [{"text": ["a first text", "a second"]}, {"text": ["a third"]}]
    got = encoder.encode(batches, task_metadata=md["Retrieval"], hf_split="test",
                         hf_subset="default", prompt_type=PromptType.query)
    want = MoEEmbeddingTransformer(str(random_moe_xlmr_path), prompt_name="query",
                                   normalize="l2").embed(["a first text", "a second", "a third"])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_custom_prompt_maps(e5_path, random_moe_xlmr_path):
    md_retrieval = MockRetrievalTask().metadata
    md_cls = MockClassificationTask().metadata
    # e5 has no prompt table: raw prefixes per side; anything else keeps the transformer's prompt.
    e5 = SkmoeMTEBEncoder(
        MoEEmbeddingTransformer(str(e5_path), prompt="query: "),
        prompts={"query": "query: ", "document": "passage: "},
    )
    assert e5.get_prompt(md_retrieval, PromptType.document) == "passage: "
    assert e5.get_prompt(md_cls) == "query: "
    # Names from the model's table, by task name (wins over the task type).
    moe = SkmoeMTEBEncoder(
        MoEEmbeddingTransformer(str(random_moe_xlmr_path)),
        prompts_by_task_type={"MockClassificationTask": "clustering", "Classification": "query"},
    )
    assert moe.get_prompt(md_cls) == "clustering: "
    with pytest.raises(ValueError, match="Unknown prompt_name"):
        SkmoeMTEBEncoder(
            MoEEmbeddingTransformer(str(random_moe_xlmr_path)),
            prompts_by_task_type={"Classification": "no-such-prompt"},
        ).get_prompt(md_cls)


def test_a_rerun_served_from_the_cache_loads_no_weights(e5_path, tmp_path, monkeypatch):
    """encode() loaded the model even when every text was cached (3.6 s for e5-small, 1.9 GB
    for the MoE, in every process of a re-evaluation)."""
    from skmoe import registry

    md = MockClassificationTask().metadata
    batches = [{"text": ["a first text", "a second"]}, {"text": ["a third"]}]
    cache = str(tmp_path / "mteb.sqlite")
    first = SkmoeMTEBEncoder(MoEEmbeddingTransformer(str(e5_path), prompt="query: ", cache=cache))
    cold = first.encode(batches, task_metadata=md, hf_split="test", hf_subset="default")
    registry.clear()  # a new process: nothing loaded

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    monkeypatch.setattr(registry, "load_encoder", no_load)
    again = SkmoeMTEBEncoder(MoEEmbeddingTransformer(str(e5_path), prompt="query: ", cache=cache))
    warm = again.encode(batches, task_metadata=md, hf_split="test", hf_subset="default")
    np.testing.assert_array_equal(cold, warm)
    assert again.get_prompt(md) == "query: " and again.mteb_model_meta.embed_dim == 384


def test_without_mteb_the_adapter_names_the_extra(e5_path, monkeypatch):
    """Without mteb, `encode` and `mteb_model_meta` raised a bare ModuleNotFoundError."""
    import sys

    for module in ("mteb.models.abs_encoder", "mteb.models.model_meta"):
        monkeypatch.setitem(sys.modules, module, None)  # what an environment without it gives
    adapter = SkmoeMTEBEncoder(MoEEmbeddingTransformer(model=str(e5_path), prompt="query: "))
    with pytest.raises(ImportError, match=r"needs mteb .*pip install 'skmoe\[mteb\]'"):
        adapter.get_prompt(None)
    with pytest.raises(ImportError, match=r"needs mteb .*pip install 'skmoe\[mteb\]'"):
        adapter.mteb_model_meta  # noqa: B018


def test_a_batch_whose_text_is_one_string_is_refused(e5_path):
    """A batch {"text": "abc"} became one text per letter."""
    encoder = SkmoeMTEBEncoder(MoEEmbeddingTransformer(str(e5_path), prompt="query: "))
    with pytest.raises(TypeError, match="a batch's text"):
        encoder.encode([{"text": "one text"}], task_metadata=MockSTSTask().metadata,
                       hf_split="test", hf_subset="default")
