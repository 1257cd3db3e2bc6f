"""``encode_ids`` asks a fast tokenizer's ``tokenizers`` backend directly: it must return what
the ``transformers`` wrapper's ``__call__`` returns, whatever state the backend was left in."""

from __future__ import annotations

import pytest
from _texts import SCRIPTS, sib200_texts

from skmoe.encoder.tokenization import encode_ids, load_tokenizer

EDGE = ["", " ", "a", "<s>", "</s> inside", "<mask> and <pad>", "\u200b\u00a0zero width",
        "x" * 3000, "🙂👍🏽 🇫🇷", "\t\n tabs \r\n"]


@pytest.fixture(scope="module")
def texts(sib200_dir):
    return [t for lang in SCRIPTS for t in sib200_texts(sib200_dir, lang, 20)] + EDGE


@pytest.fixture(scope="module", params=["wordpiece", "xlmr"])
def tokenizer(request, bert_tokenizer, xlmr_tokenizer_path):
    return load_tokenizer(bert_tokenizer if request.param == "wordpiece" else xlmr_tokenizer_path)


def wrapper(tok, texts, max_length, special=True):
    return tok(texts, add_special_tokens=special, truncation=max_length is not None,
               max_length=max_length, verbose=False)["input_ids"]


@pytest.mark.parametrize("max_length", [None, 1, 7, 64])
@pytest.mark.parametrize("special", [True, False])
def test_backend_ids_equal_the_wrappers(tokenizer, texts, max_length, special):
    assert encode_ids(tokenizer, texts, max_length, add_special_tokens=special) == wrapper(
        tokenizer, texts, max_length, special)


def test_settings_left_on_the_backend_do_not_leak_in(tokenizer, texts):
    tokenizer(texts, padding="max_length", truncation=True, max_length=5)  # leaves both set
    assert encode_ids(tokenizer, texts, None) == wrapper(tokenizer, texts, None)
    assert encode_ids(tokenizer, texts, 9) == wrapper(tokenizer, texts, 9)
    tokenizer._tokenizer.enable_truncation(3)
    assert encode_ids(tokenizer, texts, 40) == wrapper(tokenizer, texts, 40)


def test_a_tokenizer_without_a_backend_is_called_as_it_is():
    class Plain:
        def __call__(self, texts, add_special_tokens, truncation, max_length, verbose):
            return {"input_ids": [[len(t), int(truncation), max_length or 0] for t in texts]}

    assert encode_ids(Plain(), ["ab", "c"], 5) == [[2, 1, 5], [1, 1, 5]]
    assert encode_ids(Plain(), ["ab"], None) == [[2, 0, 0]]


def test_two_threads_with_two_limits_never_cut_at_each_others(tokenizer, texts):
    """The backend's truncation is state shared by every estimator of a model: set by one
    thread, used by another, it cut rows at the other's max_length without a warning (audit
    2026-12-04: 120 of 400 rows of a max_length=512 estimator cut at 33 tokens)."""
    import threading

    long_texts = [t * 40 for t in texts if t.strip()]
    want = {n: encode_ids(tokenizer, long_texts, n) for n in (5, 300)}
    wrong: list[int] = []

    def run(n: int) -> None:
        for _ in range(10):
            if encode_ids(tokenizer, long_texts, n) != want[n]:
                wrong.append(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in (5, 300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
